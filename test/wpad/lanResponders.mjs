#!/usr/bin/env node
// Test-only LAN hosts for the wpad-guard tests, run inside a network namespace with
// `ip netns exec NS node lanResponders.mjs CONFIG_JSON`: an honest or rogue DNS server, LLMNR
// and NBNS responders (honest: own names only; Responder-style poisoner: every name), an mDNS
// responder, and HTTP servers serving a PAC file. Prints "ready" on stdout when everything
// listens, one line per query answered on stderr, and exits on SIGTERM or when stdin closes.
//
// CONFIG: {
//   dns?:   { bind: IP, records: { [name]: IP } },                  // NXDOMAIN for everything else
//   llmnr?: { reply_from: IP, names?: { [name]: IP }, all?: IP, repeat?: N },   // all: answer every name with IP; repeat: send each answer N times
//   llmnr6?: { iface: IF, reply_from: IPv6 link-local, names?, all? }  // LLMNR on ff02::1:3
//   nbns?:  { reply_from: IP, names?: { [name]: IP }, all?: IP },
//   mdns?:  { reply_from: IP, names?: { [name]: IP }, all?: IP },   // names without ".local"
//   http?:  [{ bind: IP, port: number, pac: string }]
// }
import dgram from 'node:dgram';
import http from 'node:http';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import dnsPacket from 'dns-packet';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { encodeNameQueryResponse, parseNbnsPacket } = await import(pathToFileURL(join(REPO, 'dist', 'wpad', 'nbnsPacket.js')).href);

const config = JSON.parse(process.argv[2] ?? '{}');
const closers = [];
const log = (s) => process.stderr.write(s + '\n');

function udp(bind, port) {
  const s = dgram.createSocket({ type: bind.includes(':') ? 'udp6' : 'udp4', reuseAddr: true });
  closers.push(() => new Promise((r) => s.close(() => r())));
  return new Promise((resolve, reject) => { s.once('error', reject); s.bind(port, bind, () => resolve(s)); });
}

const lookupIn = (c, name) => c.all ?? c.names?.[name.toLowerCase()];

async function dnsFormatResponder(kind, c, port, group) {
  const v6 = group.includes(':');
  const listen = await udp(v6 ? '::' : '0.0.0.0', port);
  listen.addMembership(group, v6 ? `::%${c.iface}` : c.reply_from);
  const reply = await udp(v6 ? `${c.reply_from}%${c.iface}` : c.reply_from, 0);
  listen.on('message', (msg, from) => {
    let q;
    try { q = dnsPacket.decode(msg); } catch { return; }
    const question = q.questions?.[0];
    if (q.type !== 'query' || !question || question.type !== 'A') return;
    const bare = kind === 'mdns' ? question.name.replace(/\.local$/i, '') : question.name;
    const ip = lookupIn(c, bare);
    log(`${kind}: ${from.address.replace(/%.*$/, "")} asked ${question.name}, ${ip ? `answered ${ip}` : 'no answer'}`);
    if (!ip) return;
    const answer = dnsPacket.encode({
      type: 'response', id: q.id, flags: kind === 'mdns' ? dnsPacket.AUTHORITATIVE_ANSWER : 0, questions: [question],
      answers: [{ type: 'A', class: 'IN', name: question.name, ttl: 30, data: ip }],
    });
    for (let i = 0; i < (c.repeat ?? 1); i++) reply.send(answer, from.port, from.address);
  });
}

async function nbnsResponder(c) {
  const listen = await udp('0.0.0.0', 137);
  const reply = await udp(c.reply_from, 0);
  listen.on('message', (msg, from) => {
    let q;
    try { q = parseNbnsPacket(msg); } catch { return; }
    const question = q.questions[0];
    if (q.response || !question) return;
    const ip = lookupIn(c, question.name);
    log(`nbns: ${from.address} asked ${question.name}, ${ip ? `answered ${ip}` : 'no answer'}`);
    if (!ip) return;
    reply.send(encodeNameQueryResponse({ id: q.id, name: question.name, suffix: question.suffix, addresses: [ip] }), from.port, from.address);
  });
}

async function dnsServer(c) {
  const s = await udp(c.bind, 53);
  s.on('message', (msg, from) => {
    let q;
    try { q = dnsPacket.decode(msg); } catch { return; }
    const question = q.questions?.[0];
    if (!question) return;
    const ip = c.records[question.name.toLowerCase()];
    log(`dns: ${from.address} asked ${question.name}, ${ip ? `answered ${ip}` : 'NXDOMAIN'}`);
    s.send(dnsPacket.encode({
      type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (ip ? 0 : 3), questions: [question],
      answers: ip && question.type === 'A' ? [{ type: 'A', class: 'IN', name: question.name, ttl: 30, data: ip }] : [],
    }), from.port, from.address);
  });
}

function pacServer(h) {
  const server = http.createServer((req, res) => {
    log(`http ${h.bind}:${h.port}: ${req.method} ${req.url} Host: ${req.headers.host}`);
    if (req.url !== '/wpad.dat') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/x-ns-proxy-autoconfig' }).end(h.pac);
  });
  closers.push(() => new Promise((r) => { server.close(() => r()); server.closeAllConnections(); }));
  return new Promise((resolve, reject) => server.once('error', reject).listen(h.port, h.bind, resolve));
}

if (config.dns) await dnsServer(config.dns);
if (config.llmnr) await dnsFormatResponder('llmnr', config.llmnr, 5355, '224.0.0.252');
if (config.llmnr6) await dnsFormatResponder('llmnr6', config.llmnr6, 5355, 'ff02::1:3');
if (config.mdns) await dnsFormatResponder('mdns', config.mdns, 5353, '224.0.0.251');
if (config.nbns) await nbnsResponder(config.nbns);
for (const h of config.http ?? []) await pacServer(h);
process.stdout.write('ready\n');

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await Promise.all(closers.map((c) => c()));
  process.exit(0);
};
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
