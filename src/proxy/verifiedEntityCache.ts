import { gateReason } from '../inspect/gateReason.js';
import type { HeldDownload } from './heldDownload.js';

/**
 * The holds in flight and the verified copies kept after them: one download per URL (plus the
 * credentials' identity) that later clients join, a verified copy lingering for its TTL (least
 * recently used first), one copy per upstream entity (URL without query, strong ETag), and the
 * reclaiming of cached copies when the memory or disk budget is short.
 */
export class VerifiedEntityCache {
  /** Downloads that clients may join (in flight or verified and kept), by key. */
  readonly downloads = new Map<string, HeldDownload>();
  /** Verified entities lingering for their TTL, least recently used first. */
  private readonly cached = new Map<HeldDownload, NodeJS.Timeout>();
  /** Verified copies kept, by URL-without-query and strong ETag: one copy per upstream entity. */
  private readonly entities = new Map<string, HeldDownload>();
  /** Every hold not yet settled (GET, HEAD and other methods alike), for stop() and inFlight. */
  private readonly active = new Set<HeldDownload>();

  get inFlight(): number {
    let n = 0;
    for (const d of this.active) if (!d.settled) n++;
    return n;
  }

  /** Bytes in the spool of holds in flight and of verified copies still cached. */
  get spoolBytes(): number {
    let n = 0;
    for (const d of new Set([...this.active, ...this.downloads.values()])) n += d.spoolBytes;
    return n;
  }

  /** A download (or verified copy) under `key` that a client may join, made most recently used. */
  joinable(key: string): HeldDownload | undefined {
    const d = this.downloads.get(key);
    if (!d || !d.joinable) return undefined;
    const ttl = this.cached.get(d);
    if (ttl && this.cached.delete(d)) this.cached.set(d, ttl);
    return d;
  }

  /** A new hold; `shared`: under its key for later clients to join. */
  track(d: HeldDownload, shared: boolean): void {
    this.active.add(d);
    if (shared) this.downloads.set(d.key, d);
  }

  /**
   * A hold's settle callback. Not a closure made per request: that one would keep the request's
   * objects (and through the first client's response the stream it was served from) alive as long
   * as the entity stays cached.
   */
  readonly settled = (d: HeldDownload, cacheable: boolean): void => {
    this.active.delete(d);
    if (!cacheable) {
      if (this.downloads.get(d.key) === d) this.downloads.delete(d.key);
      return;
    }
    const t = setTimeout(() => this.uncache(d), d.keepMs);
    t.unref();
    this.cached.set(d, t);
    if (d.entityKey) this.entities.set(d.entityKey, d);
  };

  /** A verified copy of the entity `key` names (URL without query, strong ETag), still kept. */
  readonly sameEntity = (key: string): HeldDownload | undefined => {
    const d = this.entities.get(key);
    if (!d || !this.cached.has(d)) return undefined;
    const ttl = this.cached.get(d)!;
    this.cached.delete(d);
    this.cached.set(d, ttl); // most recently used
    return d;
  };

  /** Ends a cached entity's linger: no new client gets it; its spool goes when its readers are done. */
  private uncache(d: HeldDownload): void {
    clearTimeout(this.cached.get(d));
    this.cached.delete(d);
    if (this.downloads.get(d.key) === d) this.downloads.delete(d.key);
    if (d.entityKey && this.entities.get(d.entityKey) === d) this.entities.delete(d.entityKey);
    d.expire();
  }

  /** The memory budget is short by `bytes`: drop cached entities held in memory, least recently used first. */
  reclaimMemory(bytes: number): void {
    let freed = 0;
    for (const d of this.cached.keys()) {
      if (freed >= bytes) break;
      const m = d.inMemoryBytes;
      if (m === 0) continue;
      this.uncache(d);
      freed += m;
    }
  }

  /** The spool's disk is short by `bytes` (one client's share, if `owner`): drop verified copies on disk, least recently used first. */
  reclaimDisk(bytes: number, owner?: string): void {
    let freed = 0;
    for (const d of [...this.cached.keys()]) {
      if (freed >= bytes) break;
      if (owner !== undefined && d.owner !== owner) continue;
      const n = d.onDiskBytes;
      if (n === 0) continue;
      this.uncache(d);
      freed += n;
    }
  }

  /** Stop: every hold still open is blocked, every copy let go. */
  clear(): void {
    for (const d of [...this.active, ...this.downloads.values()]) d.fail(gateReason('INTERNAL_ERROR', 'patchgate is shutting down'));
    this.active.clear();
    for (const d of this.downloads.values()) d.expire();
    this.downloads.clear();
    for (const t of this.cached.values()) clearTimeout(t);
    this.cached.clear();
    this.entities.clear();
  }
}
