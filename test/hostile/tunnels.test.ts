/**
 * Blind CONNECT tunnels whose client walks away while the far end stays open (issue 13, item 4):
 * left half-open, each kept two descriptors in the gate for as long as the far end lived. A tunnel
 * must end when either side ends, and after an idle timeout. The far end here never closes a
 * connection by itself (allowHalfOpen, no timeout), as a server that keeps idle sockets would.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net, { type AddressInfo, type Socket } from 'node:net';
import { type GateHandle, quietConsole, sleep, startGate, waitFor } from '../support/gateHarness.js';
import { connectRaw, fdCount } from './hostileSupport.js';

let restore: () => void;
let g: GateHandle;
let far: net.Server;
let farPort = 0;
const farSockets = new Set<Socket>();
let farEnded = 0;

const tunnelCount = () => (g.gate as unknown as { connects: { tunnels: Set<unknown> } }).connects.tunnels.size;

beforeAll(async () => {
  restore = quietConsole();
  far = net.createServer({ allowHalfOpen: true }, (s) => {
    farSockets.add(s);
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('end', () => farEnded++);
    s.on('close', () => farSockets.delete(s));
  });
  await new Promise<void>((r) => far.listen(0, '127.0.0.1', r));
  farPort = (far.address() as AddressInfo).port;
  // `localhost` is named by a rule (pass): its CONNECTs are tunnelled blind.
  g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }, { pattern: 'localhost', mode: 'pass' }], limits: { tunnelIdleTimeoutMs: 1500 } });
});

afterAll(async () => {
  for (const s of farSockets) s.destroy();
  far?.close();
  await g?.dispose();
  restore?.();
});

async function openTunnels(n: number): Promise<Socket[]> {
  const out: Socket[] = [];
  for (let i = 0; i < n; i++) {
    const c = await connectRaw(g.port, `localhost:${farPort}`);
    expect(c.status).toBe(200);
    c.socket!.on('error', () => {});
    c.socket!.write('hello');
    out.push(c.socket!);
  }
  return out;
}

describe('blind tunnels', () => {
  it('200 clients end their side while the far end stays open: the gate closes every tunnel (both descriptors) within a second', async () => {
    const fdsBefore = fdCount();
    const clients = await openTunnels(200);
    expect(await waitFor(() => farSockets.size >= 200, 5000)).toBe(true);
    expect(tunnelCount()).toBe(200);
    let closed = 0;
    for (const c of clients) c.once('close', () => closed++);
    const endedBefore = farEnded;
    const t0 = Date.now();
    for (const c of clients) c.end(); // the client leaves (FIN); the far end never closes
    await waitFor(() => closed === 200 && tunnelCount() === 0, 5000);
    const ms = Date.now() - t0;
    expect(tunnelCount(), 'tunnels still open in the gate').toBe(0);
    expect(closed, 'client sockets the gate closed').toBe(200);
    expect(farEnded - endedBefore, 'far-end connections the gate ended').toBe(200);
    expect(ms).toBeLessThan(1000);
    // The far end's 200 half-open sockets are this process's own (the test's server): drop them,
    // then the process is back where it started (the gate keeps nothing).
    for (const s of farSockets) s.destroy();
    expect(await waitFor(() => fdCount() <= fdsBefore + 3, 3000), `fds ${fdCount()} vs ${fdsBefore}`).toBe(true);
  });

  it('the far end ends first while the client stays open: the tunnel closes', async () => {
    const [c] = await openTunnels(1);
    await waitFor(() => farSockets.size >= 1);
    let closed = false;
    c!.once('close', () => (closed = true));
    for (const s of farSockets) s.end();
    expect(await waitFor(() => closed && tunnelCount() === 0, 3000)).toBe(true);
    for (const s of farSockets) s.destroy();
  });

  it('an idle tunnel is closed after tunnelIdleTimeoutMs (1.5 s here); one with traffic every 300 ms stays open', async () => {
    const [idle, busy] = await openTunnels(2);
    let idleClosedAt = 0;
    let busyClosed = false;
    const t0 = Date.now();
    idle!.once('close', () => (idleClosedAt = Date.now()));
    busy!.once('close', () => (busyClosed = true));
    while (Date.now() - t0 < 3000) {
      busy!.write('.');
      await sleep(300);
    }
    expect(idleClosedAt, 'the idle tunnel was closed').toBeGreaterThan(0);
    expect(idleClosedAt - t0).toBeGreaterThanOrEqual(1400);
    expect(idleClosedAt - t0).toBeLessThan(2800);
    expect(busyClosed, 'the busy tunnel was closed').toBe(false);
    busy!.destroy();
    await waitFor(() => tunnelCount() === 0, 3000);
    expect(tunnelCount()).toBe(0);
    for (const s of farSockets) s.destroy();
  });
});
