import { fileURLToPath } from 'node:url';

/** The package root (this file is dist/cli/defaultPaths.js once built). */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEFAULT_RULES = fileURLToPath(new URL('../../rules/default.yaml', import.meta.url));
