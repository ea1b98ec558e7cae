import { Counter, Gauge, Registry } from 'prom-client';
import { WPAD_FINDINGS, type WpadFinding, type WpadProtocol } from '../audit/auditRecord.js';
import type { NameProtocol } from './nameProbes.js';

/**
 * The WPAD guard's metrics, on the registry given (the gate's, under `run --wpad-guard`, so one
 * /metrics shows both) or a private one. docs/wpad-guard.md lists every name.
 */
export class WpadMetrics {
  readonly registry: Registry;
  private readonly findings: Counter<'finding' | 'protocol'>;
  private readonly answers: Counter<'protocol' | 'asked'>;
  private readonly rounds: Counter<string>;
  private readonly lastRound: Gauge<string>;

  constructor(registry: Registry = new Registry()) {
    this.registry = registry;
    this.findings = new Counter({
      name: 'patchgate_wpad_findings_total',
      help: 'WPAD guard findings (one per audit record of kind wpad), by finding and protocol.',
      labelNames: ['finding', 'protocol'] as const,
      registers: [registry],
    });
    this.answers = new Counter({
      name: 'patchgate_wpad_answers_total',
      help: 'Answers heard by the WPAD guard, by protocol and what was asked (wpad or a random name).',
      labelNames: ['protocol', 'asked'] as const,
      registers: [registry],
    });
    this.rounds = new Counter({ name: 'patchgate_wpad_rounds_total', help: 'Probe rounds the WPAD guard completed.', registers: [registry] });
    this.lastRound = new Gauge({ name: 'patchgate_wpad_last_round_timestamp_seconds', help: 'When the last probe round ended (Unix time).', registers: [registry] });
    // Series that exist from the start, so that alerts see a 0 before the first finding.
    for (const finding of WPAD_FINDINGS) this.findings.inc({ finding, protocol: finding === 'pac-diverts-updates' ? 'http' : 'llmnr' }, 0);
  }

  finding(finding: WpadFinding, protocol: WpadProtocol): void {
    this.findings.inc({ finding, protocol });
  }

  answer(protocol: NameProtocol, asked: 'wpad' | 'random'): void {
    this.answers.inc({ protocol, asked });
  }

  roundDone(): void {
    this.rounds.inc();
    this.lastRound.set(Date.now() / 1000);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
