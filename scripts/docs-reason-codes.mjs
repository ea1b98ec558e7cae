#!/usr/bin/env node
// Rewrites the reason-code table of docs/reason-codes.md from src/verify/reasonCodes.ts, as built in
// dist/ (`npm run docs:reason-codes` builds first). test/docs/reasonCodes.test.ts fails until this
// is run after a code or its text changes.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { REASON_CODES } from '../dist/verify/reasonCodes.js';
import { withReasonCodeTable } from './lib/reasonCodeTable.mjs';

const doc = fileURLToPath(new URL('../docs/reason-codes.md', import.meta.url));
const before = readFileSync(doc, 'utf8');
const after = withReasonCodeTable(before, REASON_CODES);
if (after === before) console.log('docs/reason-codes.md: up to date');
else { writeFileSync(doc, after); console.log('docs/reason-codes.md: table rewritten'); }
