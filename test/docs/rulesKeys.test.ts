import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RULES_SCHEMA } from '../../src/policy/rulesSchema.js';
import { REPO } from '../support/fixtures.js';

type Schema = { type?: string; properties?: Record<string, Schema>; items?: Schema };

/** The key table of docs/rules.md: the backticked keys of each row's first cell, and the row's text. */
function keyRows(): { keys: string[]; text: string }[] {
  return readFileSync(join(REPO, 'docs', 'rules.md'), 'utf8').split('\n')
    .filter((l) => l.startsWith('| `'))
    .map((row) => {
      const [keys, text] = row.split(' | ');
      return { keys: [...keys!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!), text: text ?? '' };
    });
}

describe('docs/rules.md documents every key of the rules schema', () => {
  const rows = keyRows();
  const documented = rows.flatMap((r) => r.keys);
  const rowOf = (key: string) => rows.find((r) => r.keys.includes(key) || r.keys.includes(`${key}[]`));
  const properties = Object.entries(RULES_SCHEMA.properties as Record<string, Schema>);

  it('every top-level key has a row (`key` or `key[]`), or rows for each of its own keys (`key.sub`)', () => {
    const missing: string[] = [];
    for (const [key, schema] of properties) {
      if (schema.type === 'object') {
        for (const sub of Object.keys(schema.properties!)) if (!documented.includes(`${key}.${sub}`)) missing.push(`${key}.${sub}`);
      } else if (!rowOf(key)) missing.push(key);
    }
    expect(missing).toEqual([]);
  });

  it("a list of entries names each entry's keys in its row (or in a `key[].sub` row)", () => {
    const missing: string[] = [];
    for (const [key, schema] of properties) {
      const item = schema.items?.properties;
      if (!item) continue;
      const row = rowOf(key)!;
      for (const sub of Object.keys(item)) {
        const named = new RegExp(`\`${sub}(\\[\\])?\``).test(row.text) || documented.includes(`${key}[].${sub}`);
        // Anchor-like lists say "same form" as `anchors[]`: their keys are those of the anchors row.
        const sameForm = /same form/.test(row.text) && new RegExp(`\`${sub}\``).test(rowOf('anchors')!.text);
        if (!named && !sameForm) missing.push(`${key}[].${sub}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('names no key the schema does not have', () => {
    const known = (k: string): boolean => {
      const [head, ...rest] = k.replace(/\[\]/g, '').split('.');
      let s: Schema | undefined = (RULES_SCHEMA.properties as Record<string, Schema>)[head!];
      for (const part of rest) s = (s?.properties ?? s?.items?.properties)?.[part];
      return s !== undefined;
    };
    expect(documented.filter((k) => !known(k))).toEqual([]);
  });
});
