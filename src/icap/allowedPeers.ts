import type { BlockList } from 'node:net';
import { cidrList, inList } from '../policy/accessPolicy.js';

/** Who may use `patchgate icap` unless told otherwise (`--allow-peer`): this host only. */
export const DEFAULT_ALLOWED_PEERS = ['127.0.0.0/8', '::1/128'];

/**
 * The ICAP clients (proxies) allowed to connect, as CIDR blocks. Anyone else who reaches the port
 * could use the service as a verification oracle and write audit records under a chosen
 * X-Client-IP; their connections are closed unanswered. Same CIDR parsing as the gate's `clients`.
 */
export class AllowedPeers {
  private readonly list: BlockList;

  readonly blocks: readonly string[];

  /** Blocks as ADDRESS or ADDRESS/PREFIX (IPv4 or IPv6), each string possibly a comma-separated list; throws on anything else. */
  constructor(blocks: readonly string[] = DEFAULT_ALLOWED_PEERS) {
    this.blocks = blocks.flatMap((b) => b.split(',')).map((b) => b.trim()).filter(Boolean);
    if (!this.blocks.length) throw new Error('no address or CIDR block given');
    this.list = cidrList([...this.blocks]);
  }

  allows(address: string | undefined): boolean {
    return !!address && inList(this.list, address);
  }
}
