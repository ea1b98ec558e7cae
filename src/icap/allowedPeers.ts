import net, { BlockList } from 'node:net';

/** Who may use `patchgate icap` unless told otherwise (`--allow-peer`): this host only. */
export const DEFAULT_ALLOWED_PEERS = ['127.0.0.0/8', '::1/128'];

/**
 * The ICAP clients (proxies) allowed to connect, as CIDR blocks. Anyone else who reaches the port
 * could use the service as a verification oracle and write audit records under a chosen
 * X-Client-IP; their connections are closed unanswered.
 */
export class AllowedPeers {
  private readonly list = new BlockList();

  readonly blocks: readonly string[];

  /** Blocks as ADDRESS or ADDRESS/PREFIX (IPv4 or IPv6), each string possibly a comma-separated list; throws on anything else. */
  constructor(blocks: readonly string[] = DEFAULT_ALLOWED_PEERS) {
    this.blocks = blocks.flatMap((b) => b.split(',')).map((b) => b.trim()).filter(Boolean);
    if (!this.blocks.length) throw new Error('no address or CIDR block given');
    for (const b of this.blocks) {
      const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(b.trim());
      const addr = m?.[1]?.replace(/^\[|\]$/g, '') ?? '';
      const type = net.isIPv4(addr) ? 'ipv4' : net.isIPv6(addr) ? 'ipv6' : undefined;
      const max = type === 'ipv4' ? 32 : 128;
      const prefix = m?.[2] === undefined ? max : Number(m[2]);
      if (!type || prefix > max) throw new Error(`"${b}" is not an IPv4 or IPv6 address or CIDR block (ADDRESS/PREFIX)`);
      this.list.addSubnet(addr, prefix, type);
    }
  }

  allows(address: string | undefined): boolean {
    if (!address) return false;
    // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
    const a = address.replace(/^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i, '$1');
    const type = net.isIPv4(a) ? 'ipv4' : net.isIPv6(a) ? 'ipv6' : undefined;
    return type !== undefined && this.list.check(a, type);
  }
}
