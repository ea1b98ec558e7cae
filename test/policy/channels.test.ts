import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadRulesFile, parseRules } from '../../src/policy/rulesFile.js';
import { buildPolicy } from '../../src/policy/buildPolicy.js';
import { buildTrustChannels } from '../../src/policy/trustChannels.js';
import { REPO } from '../support/fixtures.js';

const CTL_CA = '56625ec7886445706fe74ccd2abf69b7c9c9ccde3c7354903af1c8f0e30e9d1c';
const PCA_2024 = '3dadfaf812dd1bbaef45834ccbd188f3cd97139e2ed1aca69c2dd63082142f8f';

describe('trust channels (default rules)', () => {
  const loaded = loadRulesFile(join(REPO, 'rules', 'default.yaml'));
  const base = buildPolicy(loaded);
  const channels = buildTrustChannels(loaded, base);
  it('ctldl.windowsupdate.com: the Certificate List CA approves trust lists, no anchor approves code', () => {
    const c = channels.trustFor('ctldl.windowsupdate.com', '/msdownload/update/v3/static/trustedr/en/authrootstl.cab');
    expect(c.name).toBe('certificate-trust-lists');
    expect(c.policy.anchors).toEqual([]);
    expect(c.policy.ctlAnchors?.map((a) => a.sha256)).toEqual([CTL_CA]);
    expect(c.nonPayload).toBe('pass');
    expect(c.policy.tsaAnchors.length).toBe(base.tsaAnchors.length);
  });
  it('the older trust-list path on the download host is a trust-list channel too; the rest of that host is not', () => {
    const c = channels.trustFor('www.download.windowsupdate.com', '/msdownload/update/v3/static/trustedr/en/authrootstl.cab');
    expect(c.name).toBe('certificate-trust-lists-legacy');
    expect(c.policy.anchors).toEqual([]);
    expect(channels.trustFor('www.download.windowsupdate.com', '/msdownload/update/software/secu/2026/12/x.cab').name).toBe('default');
  });
  it('payload hosts: the code-signing PCAs, no CTL anchor', () => {
    for (const host of ['download.windowsupdate.com', 'au.download.windowsupdate.com', '7.tlu.dl.delivery.mp.microsoft.com']) {
      const c = channels.trustFor(host, '/d/x.cab');
      expect(c.name).toBe('default');
      expect(c.policy.anchors.map((a) => a.sha256)).toContain(PCA_2024);
      expect(c.policy.ctlAnchors).toEqual([]);
    }
  });
  it('`patchgate verify` (no host) sees both: the rules\' top-level anchors and CTL anchors', () => {
    expect(base.ctlAnchors?.map((a) => a.sha256)).toEqual([CTL_CA]);
  });
  it('a channel key the schema does not know is refused', () => {
    expect(() => parseRules('version: 1\nanchors: []\nchannels:\n  - name: x\n    hosts: [a]\n    anchor: none\n', 'x.yaml')).toThrow(/unknown key "anchor"/);
    expect(() => parseRules('version: 1\nanchors: []\nchannels:\n  - name: x\n    hosts: [a]\n    anchors: some\n', 'x.yaml')).toThrow(/anchors/);
  });
});
