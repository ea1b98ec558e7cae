/**
 * The verified-entity cache without sockets: which download a client joins, how long a verified
 * copy is kept, the order copies are let go in when memory or disk is short, and stop. The holds
 * are stand-ins with the few fields the cache reads (HeldDownload's own behaviour has its e2e tests).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { VerifiedEntityCache } from '../../src/proxy/verifiedEntityCache.js';
import type { HeldDownload } from '../../src/proxy/heldDownload.js';

interface StandIn {
  key: string; settled: boolean; joinable: boolean; keepMs: number; entityKey?: string; owner: string;
  inMemoryBytes: number; onDiskBytes: number; spoolBytes: number; expired: boolean; failed?: string;
  expire(): void; fail(why: { code: string }): void;
}

function hold(key: string, o: Partial<StandIn> = {}): StandIn & HeldDownload {
  const d: StandIn = {
    key, settled: false, joinable: true, keepMs: 60_000, owner: 'c1', inMemoryBytes: 0, onDiskBytes: 0, spoolBytes: 0, expired: false, ...o,
    expire() { d.expired = true; },
    fail(why) { d.failed ??= why.code; d.settled = true; },
  };
  return d as StandIn & HeldDownload;
}

afterEach(() => { vi.useRealTimers(); });

describe('VerifiedEntityCache', () => {
  it('a shared download is joinable under its key until its response says otherwise; an unshared one never', () => {
    const c = new VerifiedEntityCache();
    const a = hold('http://h/a');
    c.track(a, true);
    expect(c.joinable('http://h/a')).toBe(a);
    a.joinable = false;
    expect(c.joinable('http://h/a')).toBeUndefined();
    const b = hold('http://h/b#id');
    c.track(b, false);
    expect(c.joinable('http://h/b#id')).toBeUndefined();
    expect(c.inFlight).toBe(2);
  });

  it('a verified copy is kept for its keepMs, then let go (expired, no longer joinable); an uncacheable one at once', () => {
    vi.useFakeTimers();
    const c = new VerifiedEntityCache();
    const a = hold('http://h/a', { keepMs: 1000, entityKey: 'http://h/a#etag:"1"' });
    c.track(a, true);
    a.settled = true;
    c.settled(a, true);
    expect(c.inFlight).toBe(0);
    expect(c.joinable('http://h/a')).toBe(a);
    expect(c.sameEntity('http://h/a#etag:"1"')).toBe(a);
    vi.advanceTimersByTime(1001);
    expect(a.expired).toBe(true);
    expect(c.joinable('http://h/a')).toBeUndefined();
    expect(c.sameEntity('http://h/a#etag:"1"')).toBeUndefined();
    const b = hold('http://h/b');
    c.track(b, true);
    c.settled(b, false);
    expect(c.joinable('http://h/b')).toBeUndefined();
    expect(b.expired).toBe(false); // its readers still hold the spool; nothing to keep
  });

  it('memory short: cached copies in memory go least recently used first, until enough is freed', () => {
    const c = new VerifiedEntityCache();
    const [a, b, d] = ['a', 'b', 'd'].map((k) => hold(`http://h/${k}`, { inMemoryBytes: 100 }));
    for (const x of [a!, b!, d!]) { c.track(x, true); c.settled(x, true); }
    c.joinable('http://h/a'); // a is now the most recently used
    c.reclaimMemory(150);
    expect([a!.expired, b!.expired, d!.expired]).toEqual([false, true, true]);
  });

  it("disk short for one client: only that client's copies on disk go", () => {
    const c = new VerifiedEntityCache();
    const mine = hold('http://h/m', { owner: 'c1', onDiskBytes: 500 });
    const theirs = hold('http://h/t', { owner: 'c2', onDiskBytes: 500 });
    const inMemory = hold('http://h/i', { owner: 'c1', inMemoryBytes: 10 });
    for (const x of [theirs, inMemory, mine]) { c.track(x, true); c.settled(x, true); }
    c.reclaimDisk(100, 'c1');
    expect([mine.expired, theirs.expired, inMemory.expired]).toEqual([true, false, false]);
    c.reclaimDisk(100);
    expect(theirs.expired).toBe(true);
  });

  it('stop: holds in flight are blocked INTERNAL_ERROR, copies let go, nothing joinable', () => {
    const c = new VerifiedEntityCache();
    const flying = hold('http://h/f');
    const kept = hold('http://h/k');
    c.track(flying, true);
    c.track(kept, true);
    kept.settled = true;
    c.settled(kept, true);
    c.clear();
    expect(flying.failed).toBe('INTERNAL_ERROR');
    expect(kept.expired).toBe(true);
    expect(c.joinable('http://h/k')).toBeUndefined();
    expect(c.inFlight).toBe(0);
  });
});
