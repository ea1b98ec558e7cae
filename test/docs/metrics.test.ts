import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { GateMetrics } from '../../src/metrics/gateMetrics.js';
import { WpadMetrics } from '../../src/wpad/wpadMetrics.js';
import { REPO } from '../support/fixtures.js';

interface DocumentedMetric { names: string[]; type: string; labels: string[] }

/** The rows of the `| metric | type | labels | … |` (or `| name | …`) table of a docs page. */
function documentedMetrics(file: string): DocumentedMetric[] {
  const rows = readFileSync(join(REPO, 'docs', file), 'utf8').split('\n').filter((l) => l.startsWith('| `patchgate_'));
  return rows.map((row) => {
    const [names, type, labels] = row.split('|').slice(1, -1).map((c) => c.trim());
    const ticked = (s: string) => [...s.matchAll(/`([a-z0-9_]+)`/g)].map((m) => m[1]!);
    // Label values are listed in parentheses after each label name: only the names count here.
    return { names: ticked(names!), type: type!, labels: ticked(labels!.replace(/\([^)]*\)/g, '')) };
  });
}

/** name -> {type, labels} of every metric on a registry. */
async function registered(registry: Registry): Promise<Map<string, { type: string; labels: string[] }>> {
  const out = new Map<string, { type: string; labels: string[] }>();
  for (const m of await registry.getMetricsAsJSON()) {
    const metric = registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] };
    out.set(m.name, { type: String(m.type), labels: [...(metric.labelNames ?? [])] });
  }
  return out;
}

function expectRowsMatch(rows: DocumentedMetric[], actual: Map<string, { type: string; labels: string[] }>) {
  for (const row of rows.filter((r) => r.type !== '')) {
    for (const name of row.names) {
      expect(actual.has(name), `${name} is documented but not registered`).toBe(true);
      expect(row.type, `type of ${name}`).toBe(actual.get(name)!.type);
      expect(row.labels.sort(), `labels of ${name}`).toEqual([...actual.get(name)!.labels].sort());
    }
  }
}

describe('the metrics the docs list are the ones registered', () => {
  it('docs/metrics.md: every metric of `patchgate run` (with --wpad-guard), name, type and labels', async () => {
    // As `patchgate run` makes them: the rules' hash, the audit trail watched, the guard's metrics beside.
    const gate = new GateMetrics({ rulesSha256: 'test' }).watchAudit({ state: { writable: true, writeFailures: 0 } });
    new WpadMetrics(gate.registry);
    const actual = await registered(gate.registry);
    const rows = documentedMetrics('metrics.md');
    const documented = rows.flatMap((r) => r.names);
    expect([...actual.keys()].filter((n) => !documented.includes(n)), 'registered but not documented').toEqual([]);
    expect(documented.filter((n) => !actual.has(n)), 'documented but not registered').toEqual([]);
    expectRowsMatch(rows, actual);
  });

  it("docs/wpad-guard.md: the WPAD guard's metrics", async () => {
    const actual = await registered(new WpadMetrics().registry);
    const rows = documentedMetrics('wpad-guard.md');
    expect(rows.flatMap((r) => r.names).sort()).toEqual([...actual.keys()].sort());
    expectRowsMatch(rows, actual);
  });
});
