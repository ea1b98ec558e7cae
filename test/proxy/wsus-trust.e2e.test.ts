/**
 * A WSUS-style synchronisation through the gate with per-channel trust: the trust-list CAB from a
 * ctldl-named host and a payload CAB from a download host, each allowed under its own anchors;
 * a payload signed by the trust-list signer and a trust list signed by a code-signing leaf, both
 * blocked. The gate is chained to an upstream proxy (the origin on 127.0.0.1, which answers the
 * absolute-form requests), so the real Microsoft host names are used and never resolved.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { emptyPolicy } from '../../src/verify/approvedCaPolicy.js';
import { TrustChannels } from '../../src/policy/trustChannels.js';
import { signCab } from '../../src/lab/authenticodeSigner.js';
import { singleFileCabinet } from '../../src/lab/trustListSigner.js';
import { buildCab } from '../fixtures/build-unsigned.mjs';
import { type GateHandle, type Origin, proxyRequest, quietConsole, send, startGate, startOrigin } from '../support/gateHarness.js';
import { makeTrustListPki, pin, rootList, type TrustListPki } from '../support/trustListPki.js';

const CTLDL = 'http://ctldl.windowsupdate.com/msdownload/update/v3/static/trustedr/en';
const DOWNLOAD = 'http://download.windowsupdate.com/d/msdownload/update/software/secu/2026/12';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

let restoreConsole: () => void;
let origin: Origin;
let g: GateHandle;
let pki: TrustListPki;
const served = new Map<string, Buffer>();

beforeAll(async () => {
  restoreConsole = quietConsole();
  pki = makeTrustListPki();
  const base = emptyPolicy({ anchors: [pin(pki.codePca)], ctlAnchors: [pin(pki.listCa)], fileDigests: ['sha256'] });
  const channels = new TrustChannels(base, [{ name: 'certificate-trust-lists', hosts: ['ctldl.windowsupdate.com'], anchors: 'none', ctlAnchors: 'rules' }]);
  origin = await startOrigin();
  g = await startGate({
    hosts: [{ pattern: '*.windowsupdate.com', mode: 'inspect' }],
    upstreamProxy: new URL(`http://127.0.0.1:${origin.port}`),
    policy: base,
    trustFor: (h, p) => channels.trustFor(h, p),
  });
  const codeSigner = { signerCertDer: pki.codeLeaf.der, signerKey: pki.codeLeaf.keyObject, extraCertsDer: [pki.codePca.der] };
  const listSigner = { signerCertDer: pki.listPublisher.der, signerKey: pki.listPublisher.keyObject, extraCertsDer: [pki.listCa.der] };
  const files: [string, Buffer][] = [
    [`${CTLDL}/authrootstl.cab`, singleFileCabinet('authroot.stl', rootList(pki.listPublisher, pki.listCa, [pki.root.der]))],
    [`${CTLDL}/disallowedcertstl.cab`, singleFileCabinet('disallowedcert.stl', rootList(pki.codeLeaf, pki.codePca, [pki.root.der]))],
    [`${CTLDL}/forged-update.cab`, Buffer.from(signCab(buildCab(), codeSigner))],
    [`${DOWNLOAD}/windows10.0-kb5099999-x64.cab`, Buffer.from(signCab(buildCab(), codeSigner))],
    [`${DOWNLOAD}/windows10.0-kb5099998-x64.cab`, Buffer.from(signCab(buildCab(), listSigner))],
    [`${DOWNLOAD}/authrootstl.cab`, singleFileCabinet('authroot.stl', rootList(pki.listPublisher, pki.listCa, [pki.root.der]))],
  ];
  for (const [url, bytes] of files) {
    served.set(url, bytes);
    origin.route(url, send(bytes, { chunk: 4096 }));
  }
});

afterAll(async () => {
  await g?.dispose();
  await origin?.close();
  restoreConsole?.();
});

async function fetchThroughGate(url: string) {
  const r = await proxyRequest(g.port, url, { headers: { 'user-agent': 'Microsoft-CryptoAPI/10.0' } });
  const [rec] = await g.waitRecords((x) => x.url === url, 1);
  return { r, rec: rec! };
}

describe('WSUS-style sync with per-channel trust', () => {
  it('the trust-list CAB from ctldl is allowed under the Certificate List CA, byte for byte', async () => {
    const url = `${CTLDL}/authrootstl.cab`;
    const { r, rec } = await fetchThroughGate(url);
    expect(r.status, r.body.toString().slice(0, 300)).toBe(200);
    expect(r.headers['x-patchgate-verdict']).toBe('allow');
    expect(sha256(r.body)).toBe(sha256(served.get(url)!));
    expect(rec).toMatchObject({ verdict: 'allow', format: 'ctl-cab', inspected: true, trustChannel: 'certificate-trust-lists' });
    expect(origin.hits(url, 'GET')).toBe(1);
  });
  it('the payload CAB from the download host is allowed under the code-signing PCA', async () => {
    const url = `${DOWNLOAD}/windows10.0-kb5099999-x64.cab`;
    const { r, rec } = await fetchThroughGate(url);
    expect(r.status, JSON.stringify(rec.reasons)).toBe(200);
    expect(r.body.equals(served.get(url)!)).toBe(true);
    expect(rec).toMatchObject({ verdict: 'allow', format: 'cab', trustChannel: 'default' });
  });
  it('a payload signed by the trust-list signer is blocked', async () => {
    const { r, rec } = await fetchThroughGate(`${DOWNLOAD}/windows10.0-kb5099998-x64.cab`);
    expect(r.status).toBe(403);
    expect(rec.verdict).toBe('block');
    expect(rec.reasons.map((x) => x.code)).toContain('UNTRUSTED_ROOT');
  });
  it('a trust list signed by a code-signing leaf is blocked on ctldl', async () => {
    const { r, rec } = await fetchThroughGate(`${CTLDL}/disallowedcertstl.cab`);
    expect(r.status).toBe(403);
    expect(rec).toMatchObject({ verdict: 'block', format: 'ctl-cab' });
    expect(rec.reasons.map((x) => x.code)).toContain('UNTRUSTED_ROOT');
  });
  it('code on the ctldl host is blocked even when signed by the code-signing leaf (anchors: none)', async () => {
    const { r, rec } = await fetchThroughGate(`${CTLDL}/forged-update.cab`);
    expect(r.status).toBe(403);
    expect(rec.reasons.map((x) => x.code)).toContain('UNTRUSTED_ROOT');
  });
  it('a genuine trust list served from a payload host is blocked (the default channel has no CTL anchors)', async () => {
    const { r, rec } = await fetchThroughGate(`${DOWNLOAD}/authrootstl.cab`);
    expect(r.status).toBe(403);
    expect(rec.reasons.map((x) => x.code)).toContain('UNTRUSTED_ROOT');
  });
});
