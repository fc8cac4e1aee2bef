import type { Server } from 'node:net';
import type { ListenerConfig } from './config/schema.js';
import type { Logger } from './log.js';
import { BucketMap } from './protection/token-bucket.js';

/** Why a connection was closed at accept, a bounded set for metrics labels. */
export type AdmissionLimit = 'connections' | 'connections_per_ip' | 'connect_rate';

/** The limits of one listener, read when a connection arrives. */
export type ListenerLimits = Pick<ListenerConfig, 'maxConnections' | 'maxConnectionsPerIp' | 'connectRate'>;

/** remote addresses whose new-connection buckets are kept per listener */
const MAX_RATE_ADDRESSES = 100_000;

interface ListenerState {
  open: number;
  perAddress: Map<string, number>;
  /** the connect-rate buckets, remade when the limit changes */
  buckets: { spec: string; map: BucketMap } | undefined;
  refused: Record<AdmissionLimit, number>;
  /** a line was logged for this limit and it still holds */
  warned: Set<AdmissionLimit>;
}

/**
 * Admission at the TCP accept of every listener, before a TLS handshake or a byte of protocol
 * is spent: open connections per listener and per remote address, and new connections per
 * second per address (a token bucket each, bounded). A connection over a limit is closed at
 * once and counted (`junction_admission_refusals_total`); the first refusal of a run logs one
 * line. One instance lives as long as the gateway.
 */
export class Admission {
  readonly #listeners = new Map<string, ListenerState>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** refusals by listener, then limit */
  refusals(): Record<string, Record<AdmissionLimit, number>> {
    return Object.fromEntries([...this.#listeners].map(([name, state]) => [name, { ...state.refused }]));
  }

  /** open connections by listener */
  open(): Record<string, number> {
    return Object.fromEntries([...this.#listeners].map(([name, state]) => [name, state.open]));
  }

  /** Applies the limits `limits()` gives to every connection `server` accepts. */
  watch(name: string, server: Server, limits: () => ListenerLimits): void {
    const state = this.#state(name);
    // First among the 'connection' listeners: a refused socket is gone before TLS or HTTP see it.
    server.prependListener('connection', (socket) => {
      const address = socket.remoteAddress ?? '';
      const limit = this.#check(state, address, limits());
      if (limit !== undefined) {
        state.refused[limit]++;
        if (!state.warned.has(limit)) {
          state.warned.add(limit);
          this.#logger.warn({ listener: name, limit, remoteAddress: address }, `listeners.${name}: connections refused at accept (${limit}); counted in junction_admission_refusals_total`);
        }
        socket.destroy();
        return;
      }
      state.warned.clear();
      state.open++;
      state.perAddress.set(address, (state.perAddress.get(address) ?? 0) + 1);
      socket.once('close', () => {
        state.open--;
        const left = (state.perAddress.get(address) ?? 1) - 1;
        if (left === 0) state.perAddress.delete(address);
        else state.perAddress.set(address, left);
      });
    });
  }

  #state(name: string): ListenerState {
    let state = this.#listeners.get(name);
    if (!state) {
      state = { open: 0, perAddress: new Map(), buckets: undefined, refused: { connections: 0, connections_per_ip: 0, connect_rate: 0 }, warned: new Set() };
      this.#listeners.set(name, state);
    }
    return state;
  }

  #check(state: ListenerState, address: string, limits: ListenerLimits): AdmissionLimit | undefined {
    if (state.open >= limits.maxConnections) return 'connections';
    if ((state.perAddress.get(address) ?? 0) >= limits.maxConnectionsPerIp) return 'connections_per_ip';
    const { rate, per, burst } = limits.connectRate;
    const spec = `${rate}/${per}/${burst}`;
    if (state.buckets?.spec !== spec) state.buckets = { spec, map: new BucketMap({ rate, perMs: per, burst }, MAX_RATE_ADDRESSES) };
    return state.buckets.map.take(address) > 0 ? 'connect_rate' : undefined;
  }
}
