import yargs, { type Argv } from 'yargs';
import { DEFAULT_RULES } from './defaultPaths.js';
import { runGate, DEFAULT_CA_DIR } from './runCommand.js';
import { SCENARIO_NAMES, type ScenarioName } from '../lab/flameScenarios.js';
import { UsageError } from './usageError.js';
// The other commands' modules are loaded when their command runs: `patchgate run` does not keep the
// WPAD guard's PAC engine, the lab or the ICAP service in memory (about 30 MiB of RSS).
import { RulesError, loadRulesFile } from '../policy/rulesFile.js';
import { buildPolicy } from '../policy/buildPolicy.js';
import { DEFAULT_CLIENTS, DEFAULT_CONNECT_PORTS, DEFAULT_HTTP_PORTS } from '../policy/accessPolicy.js';
import { buildTrustChannels } from '../policy/trustChannels.js';
import { anchorRows, trustWarnings } from '../policy/trustReport.js';

const trustOptions = (y: Argv) =>
  y
    .option('rules', { type: 'string', default: DEFAULT_RULES, describe: 'rules file (YAML)', defaultDescription: 'rules/default.yaml' })
    .option('anchor', { type: 'string', describe: 'pin an approved CA (PEM or DER; repeatable); replaces the rules\' anchors' })
    .option('tsa-anchor', { type: 'string', describe: 'pin a timestamp authority anchor (repeatable); replaces the rules\' TSA anchors' })
    .option('distrust', { type: 'string', describe: 'file of SHA-256 certificate fingerprints to distrust, one per line' })
    .option('allow-sha1', { type: 'boolean', describe: 'accept SHA-1 digests and certificate signatures' })
    .option('eku-mode', { choices: ['strict', 'nested'] as const, describe: 'strict: every CA below the anchor must list codeSigning; nested: Windows\' semantics' })
    .option('signature-mode', { choices: ['primary', 'best', 'all'] as const, describe: 'how several signatures combine' });

/** Repeatable options arrive as a string or an array; not declared `array`, which would swallow FILE operands. */
const asList = (v: string | string[] | undefined): string[] | undefined => (v === undefined ? undefined : ([] as string[]).concat(v));

/** Runs the CLI; resolves to the exit code. Writes results to stdout, diagnostics to stderr. */
export async function main(argv: string[]): Promise<number> {
  const out = (line: string) => process.stdout.write(line + '\n');
  const err = (line: string) => process.stderr.write(line + '\n');
  let code = 0;
  const parser = yargs(argv)
    .scriptName('patchgate')
    .usage('$0 <command> [options]\n\nLets a software update through only if its code signature chains to an approved CA.')
    .command(
      'verify <files..>',
      'verify the code signature of files (Authenticode PE/CAB, detached CMS) under the rules',
      (y) =>
        trustOptions(y)
          .positional('files', { type: 'string', array: true, describe: 'files to verify' })
          .option('at', { type: 'string', describe: 'verify as at this ISO-8601 instant instead of now' })
          .option('detached', { type: 'string', describe: 'a detached CMS/PKCS#7 signature (DER or PEM) over FILE' })
          .option('url', { type: 'string', describe: 'judge FILE as the gate would for this URL: with the trust channel (rules `channels`) its host and path select' })
          .option('catalog', { type: 'string', describe: 'a signed catalog (.cat): FILE passes if the catalog verifies and lists FILE\'s Authenticode hash' })
          .option('json', { type: 'boolean', describe: 'one JSON object per line per file (the Verdict plus "file")' }),
      async (a) => {
        code = await (await import('./verifyCommand.js')).runVerify({
          files: (a.files ?? []) as string[], rules: a.rules, anchor: asList(a.anchor), tsaAnchor: asList(a['tsa-anchor']), distrust: a.distrust,
          allowSha1: a['allow-sha1'], at: a.at, detached: a.detached, catalog: a.catalog, url: a.url, json: a.json,
          ekuMode: a['eku-mode'], signatureMode: a['signature-mode'],
        }, out);
      },
    )
    .command(
      'run',
      'run the gate: an intercepting proxy that holds every update payload until it verifies',
      (y) =>
        trustOptions(y)
          .option('listen', { type: 'string', default: '127.0.0.1:8080', describe: 'HOST:PORT to accept proxy clients on' })
          .option('admin', { type: 'string', default: '127.0.0.1:8081', describe: 'HOST:PORT for /healthz ("off" to disable)' })
          .option('upstream-proxy', { type: 'string', describe: 'forward everything through this http:// proxy (the existing egress proxy)' })
          .option('update-host', { type: 'string', describe: 'add a host pattern to inspect (repeatable), e.g. 127.0.0.1 or *.windowsupdate.com' })
          .option('hold', { choices: ['whole', 'tail'] as const, describe: 'how payloads of --update-host hosts are held (rules hosts[].hold): whole (default) or tail' })
          .option('audit', { type: 'string', default: '-', describe: 'audit log file (JSON lines), or - for stdout' })
          .option('ca-dir', { type: 'string', default: DEFAULT_CA_DIR, describe: 'folder of the interception CA (made on first run; key mode 0600)' })
          .option('spool-dir', { type: 'string', describe: 'folder for held payloads (default: the system temp folder)' })
          .option('upstream-ca', { type: 'string', describe: 'PEM file of extra CAs trusted for upstream TLS (besides the system store)' })
          .option('wpad-guard', { type: 'boolean', describe: 'also watch the LAN for rogue WPAD/LLMNR/NBNS/mDNS responders (see wpad-guard)' })
          .option('wpad-interface', { type: 'string', describe: 'wpad-guard --interface (repeatable)' })
          .option('wpad-expect', { type: 'string', describe: 'wpad-guard --expect (repeatable; default: this host\'s probed addresses)' })
          .option('wpad-every', { type: 'string', default: '60s', describe: 'wpad-guard --every' })
          .option('wpad-window', { type: 'string', default: '2s', describe: 'wpad-guard --window' })
          .option('wpad-dns-server', { type: 'string', describe: 'wpad-guard --dns-server (repeatable)' })
          .option('wpad-search-domain', { type: 'string', describe: 'wpad-guard --search-domain (repeatable)' })
          .option('allow-client', { type: 'string', describe: 'also accept proxy clients from this address range (CIDR, repeatable); default: the rules\' clients, else loopback and the private ranges' }),
      async (a) => {
        code = await runGate({
          wpadGuard: a['wpad-guard'] ? {
            interface: asList(a['wpad-interface']), expect: asList(a['wpad-expect']), every: a['wpad-every'], window: a['wpad-window'],
            dnsServer: asList(a['wpad-dns-server']), searchDomain: asList(a['wpad-search-domain']),
          } : undefined,
          rules: a.rules, listen: a.listen, admin: a.admin, upstreamProxy: a['upstream-proxy'], updateHost: asList(a['update-host']), hold: a.hold,
          anchor: asList(a.anchor), tsaAnchor: asList(a['tsa-anchor']), distrust: a.distrust, allowSha1: a['allow-sha1'],
          ekuMode: a['eku-mode'], signatureMode: a['signature-mode'], audit: a.audit, caDir: a['ca-dir'], spoolDir: a['spool-dir'], upstreamCa: a['upstream-ca'],
          allowClient: asList(a['allow-client']),
        });
      },
    )
    .command(
      'icap',
      'run an ICAP RESPMOD service, so that an existing proxy (Squid) gates update downloads with patchgate',
      (y) =>
        trustOptions(y)
          .option('listen', { type: 'string', default: '127.0.0.1:1344', describe: 'HOST:PORT to accept ICAP clients on (service URI icap://HOST:PORT/respmod)' })
          .option('update-host', { type: 'string', describe: 'add a host pattern to inspect (repeatable), e.g. 127.0.0.1 or *.windowsupdate.com' })
          .option('hold', { choices: ['whole', 'tail'] as const, describe: 'how payloads of --update-host hosts are held (rules hosts[].hold): whole (default) or tail' })
          .option('audit', { type: 'string', default: '-', describe: 'audit log file (JSON lines), or - for stdout' })
          .option('admin', { type: 'string', default: 'off', describe: 'HOST:PORT for /healthz and /metrics ("off" to disable)' })
          .option('spool-dir', { type: 'string', describe: 'folder for held payloads (default: the system temp folder)' })
          .option('max-connections', { type: 'number', default: 256, describe: 'ICAP connections served at once (advertised as Max-Connections); more get 503' })
          .option('preview-bytes', { type: 'number', default: 4096, describe: 'Preview size asked for in OPTIONS (64-65536)' })
          .option('allow-peer', { type: 'string', describe: 'CIDR block(s) of ICAP clients (Squids) allowed to connect (repeatable, or comma-separated); default 127.0.0.0/8 and ::1; others are closed unanswered' })
          .option('print-squid-config', { type: 'boolean', describe: 'print the squid.conf lines for this service and the rules\' inspected hosts, and exit' }),
      async (a) => {
        code = await (await import('./icapCommand.js')).runIcap({
          rules: a.rules, listen: a.listen, admin: a.admin, updateHost: asList(a['update-host']), hold: a.hold,
          anchor: asList(a.anchor), tsaAnchor: asList(a['tsa-anchor']), distrust: a.distrust, allowSha1: a['allow-sha1'],
          ekuMode: a['eku-mode'], signatureMode: a['signature-mode'], audit: a.audit, spoolDir: a['spool-dir'],
          maxConnections: a['max-connections'], previewBytes: a['preview-bytes'], printSquidConfig: a['print-squid-config'], allowPeer: asList(a['allow-peer']),
        });
      },
    )
    .command(
      'wpad-guard',
      'watch the LAN for rogue WPAD, LLMNR, NBNS and mDNS responders and for PAC files that send update hosts around the gate',
      (y) =>
        y
          .option('interface', { type: 'string', describe: 'probe on this interface (repeatable; default: every interface with IPv4)' })
          .option('expect', { type: 'string', describe: 'a host allowed to answer wpad (repeatable): patchgate\'s own address or name' })
          .option('gate', { type: 'string', describe: 'HOST:PORT of patchgate as a PAC must name it (repeatable; default: any port of an --expect host)' })
          .option('every', { type: 'string', default: '60s', describe: 'time between probe rounds (60s, 5m)' })
          .option('window', { type: 'string', default: '2s', describe: 'how long to listen for answers to each query' })
          .option('once', { type: 'boolean', describe: 'one round, then exit: 1 if it found anything, 0 if not' })
          .option('dns-server', { type: 'string', describe: 'DNS server to ask for wpad.DOMAIN (repeatable; default: /etc/resolv.conf)' })
          .option('search-domain', { type: 'string', describe: 'DOMAIN for wpad.DOMAIN (repeatable; default: /etc/resolv.conf search)' })
          .option('protocol', { type: 'string', describe: 'only these protocols: dns, llmnr, nbns, mdns (repeatable; default: all)' })
          .option('rules', { type: 'string', default: DEFAULT_RULES, describe: 'rules file: its inspected hosts are the update hosts checked in PAC files', defaultDescription: 'rules/default.yaml' })
          .option('update-host', { type: 'string', describe: 'add an update host pattern to check in PAC files (repeatable)' })
          .option('audit', { type: 'string', default: '-', describe: 'audit log file (JSON lines, the gate\'s hash chain), or - for stdout' })
          .option('admin', { type: 'string', default: 'off', describe: 'HOST:PORT for /healthz and /metrics ("off" to disable)' }),
      async (a) => {
        code = await (await import('./wpadGuardCommand.js')).runWpadGuard({
          interface: asList(a.interface), expect: asList(a.expect), gate: asList(a.gate), every: a.every, window: a.window, once: a.once,
          dnsServer: asList(a['dns-server']), searchDomain: asList(a['search-domain']), protocol: asList(a.protocol),
          rules: a.rules, updateHost: asList(a['update-host']), audit: a.audit, admin: a.admin,
        });
      },
    )
    .command(
      'lab flame',
      "re-enact Flame's man-in-the-middle update attack on 127.0.0.1, and show the gate stop it",
      (y) =>
        y
          .option('scenario', { choices: [...SCENARIO_NAMES, 'all'] as const, default: 'forged-md5', describe: 'which attack to play ("all" plays every one)' })
          .option('out', { type: 'string', describe: 'folder for audit.jsonl and report.html' })
          .option('keep', { type: 'boolean', describe: 'keep the lab\'s temp folder (CA, spool) after the run' }),
      async (a) => {
        code = await (await import('./labCommand.js')).runLab({ scenario: a.scenario as ScenarioName | 'all', out: a.out, keep: a.keep }, out);
      },
    )
    .command(
      'audit <verify|summary>',
      'check an audit log\'s hash chain (audit verify FILE...), or summarise it (audit summary FILE...)',
      (y) =>
        y
          .command(
            'verify <files..>',
            'check the hash chain and the schema of audit logs (rotated files oldest first); exit 1 at the first break',
            (v) =>
              v
                .positional('files', { type: 'string', array: true, describe: 'audit files, oldest first (FILE.2.gz FILE.1 FILE)' })
                .option('partial', { type: 'boolean', describe: 'accept a first line that continues an earlier, absent file (not genesis)' })
                .option('head', { type: 'string', describe: 'a line hash recorded earlier (/healthz, the journal): the chain must contain it' })
                .option('json', { type: 'boolean', describe: 'one JSON object: intact, files, records, head, break' }),
            async (a) => {
              code = await (await import('./auditCommand.js')).runAuditVerify({ files: (a.files ?? []) as string[], partial: a.partial, head: a.head, json: a.json }, out);
            },
          )
          .command(
            'summary <files..>',
            'count allowed and blocked responses by host, reason and signer, and the most blocked URLs',
            (v) =>
              v
                .positional('files', { type: 'string', array: true, describe: 'audit files, oldest first' })
                .option('top', { type: 'number', default: 10, describe: 'how many blocked URLs to list' })
                .option('json', { type: 'boolean', describe: 'one JSON object instead of the report' }),
            async (a) => {
              code = await (await import('./auditCommand.js')).runAuditSummary({ files: (a.files ?? []) as string[], top: a.top, json: a.json }, out);
            },
          )
          .demandCommand(1, 'name a subcommand: audit verify FILE... or audit summary FILE...'),
    )
    .command(
      'trust <list|import-ctl>',
      'the trust store: list every anchor (trust list), or import a certificate trust list into a distrust file (trust import-ctl FILE --out F)',
      (y) =>
        y
          .command(
            'list',
            'every anchor: name, fingerprint, validity, what it may sign and where; warns about anchors expired or expiring within 90 days',
            (v) =>
              v
                .option('rules', { type: 'string', default: DEFAULT_RULES, describe: 'rules file (YAML)', defaultDescription: 'rules/default.yaml' })
                .option('at', { type: 'string', describe: 'judge validity at this ISO-8601 instant instead of now' })
                .option('json', { type: 'boolean', describe: 'one JSON object: anchors and warnings' }),
            async (a) => {
              code = (await import('./trustCommand.js')).runTrustList({ rules: a.rules, at: a.at, json: a.json }, out, err);
            },
          )
          .command(
            'import-ctl <file>',
            'verify a certificate trust list (disallowedcert.stl or its .cab) under the rules\' CTL anchors and add its entries to a distrust file',
            (v) =>
              v
                .positional('file', { type: 'string', describe: 'the .stl (or the .cab that wraps it)' })
                .option('rules', { type: 'string', default: DEFAULT_RULES, describe: 'rules file (YAML)', defaultDescription: 'rules/default.yaml' })
                .option('out', { type: 'string', demandOption: true, describe: 'distrust file to add the entries to (made if absent; name it in the rules\' distrustFiles)' })
                .option('at', { type: 'string', describe: 'verify as at this ISO-8601 instant instead of now' }),
            async (a) => {
              code = (await import('./trustCommand.js')).runImportCtl({ rules: a.rules, file: a.file as string, out: a.out, at: a.at }, out);
            },
          )
          .demandCommand(1, 'name a subcommand: trust list, or trust import-ctl FILE --out F'),
    )
    .command(
      'rules check [file]',
      'validate a rules file and the trust material it names',
      (y) => y.positional('file', { type: 'string', default: DEFAULT_RULES, describe: 'rules file', defaultDescription: 'rules/default.yaml' }),
      (a) => {
        const loaded = loadRulesFile(a.file as string);
        const policy = buildPolicy(loaded);
        out(`${a.file}: ok (sha256 ${loaded.sha256})`);
        out(`  anchors ${policy.anchors.length}, timestamp anchors ${policy.tsaAnchors.length}, distrusted ${policy.distrust.size}, hosts ${loaded.rules.hosts?.length ?? 0}`);
        out(`  policy: eku ${policy.ekuMode}, signatures ${policy.signatureMode}, sha1 ${policy.allowSha1 ? 'allowed' : 'refused'}, min RSA ${policy.minRsaBits} bits`);
        const r = loaded.rules;
        out(`  access: clients ${(r.clients ?? DEFAULT_CLIENTS).join(' ')}; passThrough ${r.passThrough ?? 'forward'}; CONNECT ports ${(r.ports?.connect ?? DEFAULT_CONNECT_PORTS).join(',')}; HTTP ports ${(r.ports?.http ?? DEFAULT_HTTP_PORTS).join(',')}; inspectAddresses ${r.inspectAddresses ?? false}`);
        out(`  content: nonPayload ${r.nonPayload ?? 'pass'} (metadata only), unsignedDeltas ${r.unsignedDeltas ?? 'block'}, unverifiable ${(r.unverifiable ?? []).map((u) => `${u.name}=${u.action}`).join(' ') || 'none'}; audit.onError ${r.audit?.onError ?? 'block'}`);
        const channels = buildTrustChannels(loaded, policy);
        for (const c of channels.all()) out(`  channel ${c.name}: ${c.policy.anchors.length} code anchor(s), ${c.policy.ctlAnchors?.length ?? 0} trust-list anchor(s)${c.nonPayload ? `, nonPayload ${c.nonPayload}` : ''}`);
        for (const w of trustWarnings(anchorRows(loaded, policy, new Date(), channels))) err(`patchgate: warning: ${w}`);
      },
    )
    .demandCommand(1, 'name a command (patchgate --help lists them)')
    .strict()
    .help()
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .exitProcess(false)
    .fail((msg, e) => {
      throw e instanceof Error ? e : new UsageError(msg);
    });
  try {
    await parser.parseAsync();
    return code;
  } catch (e) {
    if (e instanceof UsageError || e instanceof RulesError) {
      err(`patchgate: ${e.message}`);
      return 2;
    }
    if ((e as Error)?.name === 'YError') {
      err(`patchgate: ${(e as Error).message}`);
      return 2;
    }
    throw e;
  }
}
