import { join } from 'node:path';
import { runFlameLab, formatStepTable } from '../lab/flameLab.js';
import { SCENARIO_NAMES, type ScenarioName } from '../lab/flameScenarios.js';

/**
 * `patchgate lab flame`: plays one scenario (or all), prints the narrated step table, and exits 0
 * only if, in every scenario played, the naive victim accepted the forged update, patchgate blocked
 * it with the scenario's reason codes, and the genuine update passed byte-identical.
 */
export async function runLab(args: { scenario: ScenarioName | 'all'; out?: string; keep?: boolean }, out: (line: string) => void): Promise<number> {
  const names = args.scenario === 'all' ? [...SCENARIO_NAMES] : [args.scenario];
  let ok = true;
  for (const name of names) {
    const outDir = args.out ? (names.length > 1 ? join(args.out, name) : args.out) : undefined;
    const r = await runFlameLab({ scenario: name, outDir, keep: args.keep, narrate: (l) => process.stderr.write(l + '\n') });
    const codes = [...new Set(r.gate.reasons)].sort();
    const findings = [...new Set((r.wpadFindings ?? []).map((f) => f.finding))].sort();
    const guardOk = !r.expectedWpadFindings || JSON.stringify(findings) === JSON.stringify([...r.expectedWpadFindings].sort());
    const pass = r.naive.accepted && r.gate.status === 403 && JSON.stringify(codes) === JSON.stringify([...r.expectedCodes].sort()) && r.genuine.identical && guardOk;
    ok &&= pass;
    out('');
    out(`Scenario ${name}: ${r.title}`);
    out(formatStepTable(r));
    out(`=> naive client: ${r.naive.accepted ? 'INSTALLED the forged update' : 'refused it'}; patchgate: HTTP ${r.gate.status} ${r.gate.reasons.join(',')}; genuine update ${r.genuine.identical ? 'byte-identical' : 'NOT identical'} — ${pass ? 'as expected' : 'UNEXPECTED'}`);
    if (r.expectedWpadFindings) out(`=> wpad-guard: ${findings.join(', ') || 'no finding'} (expected ${[...r.expectedWpadFindings].sort().join(', ')})`);
    if (outDir) out(`   report ${join(outDir, 'report.html')}, audit ${join(outDir, 'audit.jsonl')}`);
  }
  return ok ? 0 : 1;
}
