import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // The 1 GiB streaming test measures its own process's RSS: keep test files in separate forks.
    pool: 'forks',
  },
});
