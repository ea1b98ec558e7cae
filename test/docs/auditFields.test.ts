import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AUDIT_LINE_SCHEMA, WPAD_LINE_SCHEMA } from '../../src/audit/auditSchema.js';
import { REPO } from '../support/fixtures.js';

interface DocumentedField { name: string; required: boolean }

/** The fields of the `| field | required | type | meaning |` table under `heading` in a docs file. */
function documentedFields(file: string, heading: string): DocumentedField[] {
  const text = readFileSync(join(REPO, 'docs', file), 'utf8');
  const at = text.split('\n').findIndex((l) => /^#+ /.test(l) && l.replace(/^#+ /, '') === heading);
  expect(at, `heading "${heading}" in docs/${file}`).toBeGreaterThanOrEqual(0);
  const lines = text.split('\n').slice(at + 1);
  const start = lines.findIndex((l) => l.startsWith('| field | required |'));
  expect(start, `field table under "${heading}"`).toBeGreaterThanOrEqual(0);
  const fields: DocumentedField[] = [];
  for (const row of lines.slice(start + 2)) {
    if (!row.startsWith('|')) break;
    const [, names, required] = row.split('|').map((c) => c.trim());
    expect(['yes', 'no'], row).toContain(required);
    for (const m of names!.matchAll(/`([A-Za-z0-9]+)`/g)) fields.push({ name: m[1]!, required: required === 'yes' });
  }
  return fields;
}

function expectTableMatchesSchema(fields: DocumentedField[], schema: { properties: object; required: readonly string[] }) {
  const documented = fields.map((f) => f.name);
  const properties = Object.keys(schema.properties);
  expect(properties.filter((p) => !documented.includes(p)), 'schema fields the docs do not document').toEqual([]);
  expect(documented.filter((d) => !properties.includes(d)), 'documented fields the schema does not have').toEqual([]);
  expect(documented.length, 'a field documented twice').toBe(new Set(documented).size);
  for (const f of fields) expect(f.required, `"required" of ${f.name}`).toBe(schema.required.includes(f.name));
}

describe('the audit record fields the docs document are the schema `audit verify` checks', () => {
  it('docs/audit.md "Audit records": transfer and connect lines', () => {
    expectTableMatchesSchema(documentedFields('audit.md', 'Audit records'), AUDIT_LINE_SCHEMA);
  });

  it('docs/wpad-guard.md "wpad audit records": wpad lines', () => {
    expectTableMatchesSchema(documentedFields('wpad-guard.md', 'wpad audit records'), WPAD_LINE_SCHEMA);
  });
});
