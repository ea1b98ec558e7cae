/**
 * `patchgate icap` with per-channel trust: the same trust-list cabinet is allowed for a ctldl URL
 * and blocked for a payload-host URL, and code signed by the trust-list signer is blocked, over
 * real ICAP sockets (the service asks trustFor(host, path) for each transaction).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emptyPolicy } from '../../src/verify/approvedCaPolicy.js';
import { TrustChannels } from '../../src/policy/trustChannels.js';
import { signCab } from '../../src/lab/authenticodeSigner.js';
import { singleFileCabinet } from '../../src/lab/trustListSigner.js';
import { buildCab } from '../fixtures/build-unsigned.mjs';
import { httpRequestHead, httpResponseHead, respmodOnce, startIcap, type IcapHandle } from '../support/icapHarness.js';
import { makeTrustListPki, pin, rootList } from '../support/trustListPki.js';

let icap: IcapHandle;
let stlCab: Buffer;
let listSignedCab: Buffer;

beforeAll(async () => {
  const pki = makeTrustListPki();
  const base = emptyPolicy({ anchors: [pin(pki.codePca)], ctlAnchors: [pin(pki.listCa)], fileDigests: ['sha256'] });
  const channels = new TrustChannels(base, [{ name: 'certificate-trust-lists', hosts: ['ctldl.windowsupdate.com'], anchors: 'none', ctlAnchors: 'rules' }]);
  icap = await startIcap({ hosts: [{ pattern: '*.windowsupdate.com', mode: 'inspect' }], policy: base, trustFor: (h, p) => channels.trustFor(h, p) });
  stlCab = singleFileCabinet('authroot.stl', rootList(pki.listPublisher, pki.listCa, [pki.root.der]));
  listSignedCab = Buffer.from(signCab(buildCab(), { signerCertDer: pki.listPublisher.der, signerKey: pki.listPublisher.keyObject, extraCertsDer: [pki.listCa.der] }));
});
afterAll(async () => { await icap?.dispose(); });

const ask = (url: string, body: Buffer) => respmodOnce(icap.port, {
  reqHead: httpRequestHead(url), resHead: httpResponseHead(200, { 'content-type': 'application/vnd.ms-cab-compressed', 'content-length': body.length }), body, allow204: false,
});

describe('ICAP with trust channels', () => {
  it('authrootstl.cab from ctldl is allowed', async () => {
    const a = await ask('http://ctldl.windowsupdate.com/msdownload/update/v3/static/trustedr/en/authrootstl.cab', stlCab);
    expect(a.http?.status).toBe(200);
    expect(a.body?.equals(stlCab)).toBe(true);
    const [rec] = await icap.waitRecords((r) => r.url.endsWith('/trustedr/en/authrootstl.cab'));
    expect(rec).toMatchObject({ verdict: 'allow', format: 'ctl-cab', trustChannel: 'certificate-trust-lists' });
  });
  it('the same cabinet from a payload host is blocked, and so is code signed by the trust-list signer', async () => {
    const a = await ask('http://download.windowsupdate.com/d/authrootstl.cab', stlCab);
    expect(a.http?.status).toBe(403);
    const b = await ask('http://download.windowsupdate.com/d/kb5099998.cab', listSignedCab);
    expect(b.http?.status).toBe(403);
    const recs = await icap.waitRecords((r) => r.url.startsWith('http://download.windowsupdate.com/d/'), 2);
    for (const r of recs) expect(r.reasons.map((x) => x.code)).toContain('UNTRUSTED_ROOT');
  });
});
