import type { ApprovedCaPolicy, PinnedCertificate } from '../verify/approvedCaPolicy.js';
import { Verifier } from '../verify/verifier.js';
import type { ChannelRule, LoadedRules } from './rulesFile.js';
import { hostPatternsMatcher, pathPatternsMatcher } from './hostRules.js';
import { pinEntry } from './trustMaterial.js';

/** The trust one request gets: which anchors may approve code and which may approve trust lists. */
export interface TrustChannel {
  /** The channel's name from the rules, or `default`. */
  name: string;
  policy: ApprovedCaPolicy;
  /** The channel's verifier, built once from `policy`: its anchors parsed once, its caches kept across requests. */
  verifier: Verifier;
  /** Overrides the rules' nonPayload for this channel (e.g. raw .crt files on ctldl). */
  nonPayload?: 'pass' | 'block';
}

interface CompiledChannel extends TrustChannel {
  /** The channel's host and path patterns, read once (trustFor runs per request). */
  hosts: (host: string) => boolean;
  paths?: (path: string) => boolean;
}

function channelPins(spec: ChannelRule['anchors'], inherited: PinnedCertificate[], what: string): PinnedCertificate[] {
  if (spec === undefined || spec === 'rules') return inherited;
  if (spec === 'none') return [];
  return spec.flatMap((e, i) => pinEntry(e, `${what}[${i}]`));
}

/**
 * Per-channel trust: the rules bind anchors to host/path patterns, so that the Certificate List CA
 * approves trust lists on ctldl.windowsupdate.com and nothing else, and the code-signing PCAs
 * approve payloads and never a trust list. A request no channel names gets the `default` channel:
 * the rules' code-signing anchors and no CTL anchors.
 */
export class TrustChannels {
  private readonly channels: CompiledChannel[];
  readonly fallback: TrustChannel;

  constructor(base: ApprovedCaPolicy, rules: ChannelRule[] = []) {
    const fallbackPolicy = { ...base, ctlAnchors: [] };
    this.fallback = { name: 'default', policy: fallbackPolicy, verifier: new Verifier(fallbackPolicy) };
    this.channels = rules.map((c, i) => {
      const policy: ApprovedCaPolicy = {
        ...base,
        anchors: channelPins(c.anchors, base.anchors, `channels[${i}].anchors`),
        ctlAnchors: channelPins(c.ctlAnchors, base.ctlAnchors ?? [], `channels[${i}].ctlAnchors`),
      };
      return {
        name: c.name, hosts: hostPatternsMatcher(c.hosts), paths: c.paths ? pathPatternsMatcher(c.paths) : undefined,
        nonPayload: c.nonPayload, policy, verifier: new Verifier(policy),
      };
    });
  }

  /** The trust for one request: the first channel whose host and path patterns match, else `default`. */
  trustFor(host: string, path: string): TrustChannel {
    for (const c of this.channels) {
      if (!c.hosts(host)) continue;
      if (c.paths && !c.paths(path)) continue;
      return c;
    }
    return this.fallback;
  }

  /** Every channel, the default last (for `rules check` and `trust list`). */
  all(): TrustChannel[] {
    return [...this.channels, this.fallback];
  }
}

export function buildTrustChannels(loaded: LoadedRules, base: ApprovedCaPolicy): TrustChannels {
  return new TrustChannels(base, loaded.rules.channels);
}
