/**
 * patchgate behind a real Squid: Squid proxies the clients, hands every response from an update
 * host to `patchgate icap` (RESPMOD, bypass=off), and delivers what patchgate decided. The origin
 * serves signed fixtures on 127.0.0.1. Expected verdicts come from the core on the same bytes.
 *
 * The second part runs two `patchgate icap` processes (the CLI, as deployed) in one
 * adaptation_service_set, stops one in the middle of a run of downloads, then the other.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { codes, fx, labPolicy, pki, REPO } from '../support/fixtures.js';
import { type Origin, httpsThroughProxy, makeOriginCert, proxyRequest, send, sleep, startOrigin, syntheticBytes, syntheticPe, waitFor } from '../support/gateHarness.js';
import { connectRaw } from '../hostile/hostileSupport.js';
import { startIcap, type IcapHandle } from '../support/icapHarness.js';
import { freePort, startSquid, type SquidHandle } from '../support/squidHarness.js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';
import { adminGet } from '../support/runProcess.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const file = (name: string) => readFileSync(fx(name));
const reasonSet = (h: string | string[] | undefined) => String(h ?? '').split(',').map((s) => s.trim()).filter(Boolean).sort();

let origin: Origin;
const payloads: Record<string, Buffer> = {};

beforeAll(async () => {
  origin = await startOrigin();
  for (const name of ['good.exe', 'flame.exe', 'tampered.exe', 'unsigned.exe', 'good.cab', 'rogue.exe']) payloads[name] = file(name);
  const pe = syntheticPe(3 * MiB, 21);
  payloads['big.exe'] = syntheticBytes(pe);
  payloads['bigbad.exe'] = syntheticBytes(syntheticPe(3 * MiB, 21, pe.textOffset + 7777));
  for (const [name, body] of Object.entries(payloads)) origin.route(`/${name}`, send(body));
  origin.route('/page.html', send(Buffer.from('<html>hello</html>'), { headers: { 'content-type': 'text/html' } }));
});

afterAll(async () => {
  await origin?.close();
});

describe('Squid with one patchgate ICAP service', () => {
  let icap: IcapHandle;
  let squid: SquidHandle;
  beforeAll(async () => {
    icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }] });
    squid = await startSquid({ icapPorts: [icap.port], updateHosts: ['127.0.0.1'] });
  });
  afterAll(async () => {
    await squid?.stop();
    await icap?.dispose();
  });

  it.each(['good.exe', 'good.cab', 'big.exe'])('delivers the allowed %s byte-identical', async (name) => {
    expect(verifyBytes(payloads[name]!, labPolicy()).verdict).toBe('allow');
    const r = await proxyRequest(squid.port, origin.url(`/${name}`), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(sha256(payloads[name]!));
    const [rec] = await icap.waitRecords((x) => x.url === origin.url(`/${name}`) && x.verdict === 'allow');
    expect(rec).toMatchObject({ client: '127.0.0.1', icapClient: '127.0.0.1', sha256: sha256(payloads[name]!) });
  });

  it.each(['flame.exe', 'tampered.exe', 'unsigned.exe', 'rogue.exe', 'bigbad.exe'])('turns %s into a 403 with the core\'s reasons', async (name) => {
    const expected = verifyBytes(payloads[name]!, labPolicy());
    expect(expected.verdict).toBe('block');
    const r = await proxyRequest(squid.port, origin.url(`/${name}`), { timeoutMs: 30_000 });
    expect(r.status).toBe(403);
    expect(reasonSet(r.headers['x-patchgate-reason'])).toEqual(codes(expected));
    expect(r.body.toString()).toContain('patchgate blocked this download');
    expect(r.body.length).toBeLessThan(2000);
  });

  it('leaves hosts that are not update hosts to Squid alone (no ICAP transaction, no audit record)', async () => {
    const before = icap.records().length;
    const r = await proxyRequest(squid.port, origin.url('/flame.exe', 'localhost'));
    expect(r.status).toBe(200); // not gated: it is not an update host in either Squid's or patchgate's rules
    await sleep(100);
    expect(icap.records().length).toBe(before);
  });

  it('denies CONNECT to an update host (no blind tunnel around patchgate): a forged PE over HTTPS never arrives; CONNECT elsewhere still works', async () => {
    const cert = makeOriginCert();
    const tlsOrigin = await startOrigin({ tls: cert });
    tlsOrigin.route('/flame.exe', send(payloads['flame.exe']!));
    try {
      const denied = await connectRaw(squid.port, `127.0.0.1:${tlsOrigin.port}`);
      expect(denied.status, 'CONNECT to the update host through Squid').toBe(403);
      // The same origin under a name that is not an update host: Squid tunnels it (not patchgate's business).
      const other = await connectRaw(squid.port, `localhost:${tlsOrigin.port}`);
      expect(other.status).toBe(200);
      other.socket!.destroy();
      // And the forged payload over HTTPS to the update host, as a client would ask for it.
      const r = await httpsThroughProxy(squid.port, tlsOrigin.url('/flame.exe'), { ca: cert.certPem }).catch((e: Error) => ({ status: 0, body: Buffer.alloc(0), error: e.message }));
      expect(r.status).not.toBe(200);
      expect((r.body as Buffer).includes(payloads['flame.exe']!.subarray(4700, 4800))).toBe(false);
      expect(squid.config).toMatch(/^http_access deny patchgate_connect update_hosts$/m);
    } finally {
      await tlsOrigin.close();
    }
  });

  it('passes an update host\'s page that is not a payload', async () => {
    const r = await proxyRequest(squid.port, origin.url('/page.html'));
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('<html>hello</html>');
  });

  it('answers a Range request for a payload from a verified whole: bytes of the allowed one, a 403 for the forged one', async () => {
    const g = await proxyRequest(squid.port, origin.url('/good.exe'), { headers: { Range: 'bytes=100-199' } });
    expect([200, 206]).toContain(g.status);
    const want = g.status === 206 ? payloads['good.exe']!.subarray(100, 200) : payloads['good.exe']!;
    expect(g.body.equals(want)).toBe(true);
    const f = await proxyRequest(squid.port, origin.url('/flame.exe'), { headers: { Range: 'bytes=100-199' } });
    expect(f.status).toBe(403);
    expect(f.body.includes(payloads['flame.exe']!.subarray(100, 200))).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------

interface IcapProcess { child: ChildProcess; port: number; adminPort: number; audit: string; stderr: () => string; stop(): Promise<void> }

async function startIcapProcess(dir: string, name: string): Promise<IcapProcess> {
  const port = await freePort();
  const audit = join(dir, `${name}.jsonl`);
  const child = spawn(process.execPath, [join(REPO, 'bin', 'patchgate.js'), 'icap', '--listen', `127.0.0.1:${port}`, '--update-host', '127.0.0.1',
    '--anchor', pki('updateca'), '--audit', audit, '--spool-dir', dir, '--admin', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout!.resume();
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  if (!(await waitFor(() => /ICAP RESPMOD service on icap:\/\//.test(err) && /metrics http:\/\/127\.0\.0\.1:\d+\/metrics/.test(err), 20_000))) {
    child.kill('SIGKILL');
    throw new Error(`patchgate icap did not start:\n${err}`);
  }
  const adminPort = Number(/metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(err)![1]);
  return { child, port, adminPort, audit, stderr: () => err, stop: async () => { child.kill('SIGTERM'); await exited; } };
}

describe('Squid with two patchgate ICAP processes in one service set', () => {
  let dir: string;
  let a: IcapProcess;
  let b: IcapProcess;
  let squid: SquidHandle;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'patchgate-icapset-'));
    a = await startIcapProcess(dir, 'a');
    b = await startIcapProcess(dir, 'b');
    squid = await startSquid({ icapPorts: [a.port, b.port], updateHosts: ['127.0.0.1'] });
  });
  afterAll(async () => {
    await squid?.stop();
    for (const p of [a, b]) if (p && p.child.exitCode === null) await p.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('keeps allowed downloads working when one instance stops mid-run, lets no forged byte through, and fails closed when both are gone', async () => {
    const flame = payloads['flame.exe']!;
    const good = payloads['good.exe']!;
    const results: { name: string; status: number; body: Buffer; phase: string }[] = [];
    let phase = 'both';
    const run = async (rounds: number) => {
      for (let i = 0; i < rounds; i++) {
        const [g, f] = await Promise.all([proxyRequest(squid.port, origin.url(`/good.exe?i=${phase}${i}`)), proxyRequest(squid.port, origin.url(`/flame.exe?i=${phase}${i}`))]);
        results.push({ name: 'good', status: g.status, body: g.body, phase }, { name: 'flame', status: f.status, body: f.body, phase });
      }
    };
    await run(5);
    // Stop whichever instance Squid is using (the first of the set), while downloads continue.
    const running = run(10);
    await sleep(150);
    await a.stop();
    await running;
    phase = 'after';
    await run(5);
    // No forged payload byte ever reached a client, whatever the phase.
    for (const r of results.filter((x) => x.name === 'flame')) {
      expect(r.status).not.toBe(200);
      expect(r.body.includes(flame.subarray(2048, 2200))).toBe(false);
    }
    // Every allowed download after the stop was served by the remaining instance, byte-identical.
    const after = results.filter((x) => x.phase === 'after' && x.name === 'good');
    expect(after).toHaveLength(5);
    for (const r of after) {
      expect(r.status).toBe(200);
      expect(r.body.equals(good)).toBe(true);
    }
    expect(readFileSync(b.audit, 'utf8')).toContain('"verdict":"allow"');
    // The instance's /metrics count what its audit trail holds.
    const metrics = await adminGet(b.adminPort, '/metrics');
    const bLines = readFileSync(b.audit, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { verdict: string });
    const allowed = Number(/^patchgate_transfers_total\{verdict="allow",reason="none"\} (\d+)/m.exec(metrics)?.[1]);
    expect(allowed).toBe(bLines.filter((l) => l.verdict === 'allow').length);
    // The first instance really carried the traffic before it stopped.
    expect(readFileSync(a.audit, 'utf8')).toContain('"verdict":"allow"');
    // Both gone: Squid answers an error, never the payload.
    await b.stop();
    const g = await proxyRequest(squid.port, origin.url('/good.exe?i=none'));
    const f = await proxyRequest(squid.port, origin.url('/flame.exe?i=none'));
    for (const r of [g, f]) {
      expect(r.status).toBeGreaterThanOrEqual(500);
      expect(r.body.includes(good.subarray(2048, 2200)) || r.body.includes(flame.subarray(2048, 2200))).toBe(false);
    }
    // Each instance's audit trail is an intact hash chain.
    for (const p of [a, b]) expect((await verifyAuditFiles([p.audit])).intact).toBe(true);
  }, 90_000);
});
