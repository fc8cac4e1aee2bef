import type { Bus } from '../bus.js';
import type { DeadLetterReason, DeadLetterStore } from '../deadletter/store.js';
import { GatewayError, toGatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { isExpired, newMessageId, type Message } from '../message.js';
import type { RouteDecision, RouteMatch, RouteTable, TargetBinding } from '../router/types.js';
import type { TargetReply } from '../targets/target.js';
import type { TargetLane } from './target-lane.js';

/** What the sender is told once a message is accepted. */
export interface DispatchResult {
  id: string;
  /** the first target's reply, for `mode: request` */
  reply?: TargetReply;
  /** true when the message had expired at ingress and was dropped (and counted) */
  expired?: boolean;
}

/** The live routing state. A dispatch reads it once, so each message sees exactly one table. */
export interface RoutingSnapshot {
  table: RouteTable;
  lanes: ReadonlyMap<string, TargetLane>;
  requestTimeoutMs: number;
}

export interface DispatchOptions {
  /** the sender waits for a reply (HTTP /v1/requests, WS `request`, gRPC `Request`) */
  expectReply?: boolean;
  /** how long the sender waits for that reply, in ms */
  timeoutMs?: number;
}

export interface DispatchCounters {
  received: number;
  accepted: number;
  rejected: number;
  expired: number;
  deadLettered: number;
  published: number;
}

export interface DispatcherDeps {
  bus: Bus;
  deadletter: DeadLetterStore;
  logger: Logger;
}

function reasonFor(err: GatewayError): DeadLetterReason {
  if (err.details.shutdown) return 'shutdown';
  switch (err.code) {
    case 'overloaded': return 'overloaded';
    case 'upstream_timeout': return 'timeout';
    default: return 'failed';
  }
}

/**
 * Routes each message with the current table and hands it to its targets. Accepted means
 * every target has it (queued or delivered); from then on a failure goes to the rule's
 * fallback chain and finally to the dead-letter store, never back to the sender.
 */
export class Dispatcher {
  readonly #deps: DispatcherDeps;
  #snapshot: RoutingSnapshot;
  readonly counters: DispatchCounters = { received: 0, accepted: 0, rejected: 0, expired: 0, deadLettered: 0, published: 0 };
  #pending = 0;
  #pendingWaiters: (() => void)[] = [];

  constructor(snapshot: RoutingSnapshot, deps: DispatcherDeps) {
    this.#snapshot = snapshot;
    this.#deps = deps;
  }

  get snapshot(): RoutingSnapshot {
    return this.#snapshot;
  }

  /** Swaps the routing state in one assignment: the atomic part of a reload. */
  swap(snapshot: RoutingSnapshot): void {
    this.#snapshot = snapshot;
  }

  /** fallback and dead-letter work still running after senders were answered */
  get pending(): number {
    return this.#pending;
  }

  async dispatch(message: Message, options: DispatchOptions = {}): Promise<DispatchResult> {
    this.counters.received++;
    try {
      const result = await this.#route(message, this.#snapshot, options);
      this.counters.accepted++;
      return result;
    } catch (err) {
      this.counters.rejected++;
      throw toGatewayError(err);
    }
  }

  route(message: Message): RouteDecision {
    const { key, source, headers } = message;
    return this.#snapshot.table.match({ key, protocol: source.protocol, headers });
  }

  async #route(message: Message, snapshot: RoutingSnapshot, options: DispatchOptions): Promise<DispatchResult> {
    if (isExpired(message)) {
      this.counters.expired++;
      return { id: message.id, expired: true };
    }
    const decision = snapshot.table.match({ key: message.key, protocol: message.source.protocol, headers: message.headers });
    if (decision.matches.length === 0) {
      if (decision.default === 'drop') throw new GatewayError('no_route', `no rule matches key ${message.key}`);
      if (options.expectReply) {
        const reply = await this.#requestSubscriber(message, message.key, options.timeoutMs ?? snapshot.requestTimeoutMs);
        return { id: message.id, reply };
      }
      await this.#publish(message, message.key);
      return { id: message.id };
    }
    for (const match of decision.matches) {
      if (match.route.setPriority !== undefined) message.priority = match.route.setPriority;
    }
    const first = decision.matches[0]!;
    if (options.expectReply || first.route.mode === 'request') {
      const result = await this.#request(message, decision.matches, snapshot, options.timeoutMs);
      if (!options.expectReply) await this.#forwardReply(message, result.reply!);
      return options.expectReply ? result : { id: message.id };
    }

    this.#checkCapacity(message, decision.matches, snapshot);
    const accepted: Promise<void>[] = [];
    for (const match of decision.matches) {
      for (const binding of match.targets) accepted.push(this.#deliver(message, binding, match, snapshot));
    }
    await Promise.all(accepted);
    return { id: message.id };
  }

  /**
   * All-or-nothing acceptance: if a target without a fallback is full, nothing is sent
   * anywhere and the sender is told `overloaded`, so a retry cannot duplicate.
   */
  #checkCapacity(message: Message, matches: RouteMatch[], snapshot: RoutingSnapshot): void {
    for (const match of matches) {
      if (match.fallback.length > 0) continue;
      for (const binding of match.targets) {
        if (binding.kind !== 'target') continue;
        const lane = this.#lane(binding.name, snapshot);
        if (!lane.canAccept()) {
          throw new GatewayError('overloaded', `target ${binding.name} is at capacity`, { retryAfterMs: 1000 });
        }
      }
    }
  }

  #lane(name: string, snapshot: RoutingSnapshot): TargetLane {
    const lane = snapshot.lanes.get(name);
    if (!lane) throw new GatewayError('internal', `target ${name} is not running`);
    return lane;
  }

  /** Resolves once the binding has the message; the final outcome is tracked separately. */
  async #deliver(message: Message, binding: TargetBinding, match: RouteMatch, snapshot: RoutingSnapshot): Promise<void> {
    switch (binding.kind) {
      case 'publish':
        await this.#publish(message, binding.key);
        return;
      case 'deadletter':
        await this.#deadLetter(message, 'deadletter', 'routed', 0);
        return;
      case 'target': {
        const lane = this.#lane(binding.name, snapshot);
        let outcome: Promise<TargetReply>;
        try {
          outcome = lane.submit(message);
        } catch (err) {
          await this.#fallback(message, binding.name, toGatewayError(err), match.fallback, snapshot, 0);
          return;
        }
        this.#track(outcome.then(
          () => undefined,
          (err: unknown) => this.#fallback(message, binding.name, toGatewayError(err), match.fallback, snapshot, 1),
        ));
      }
    }
  }

  /**
   * Tries the fallback chain in order; a message nobody takes ends in the dead-letter store,
   * so an accepted message is never lost.
   */
  async #fallback(message: Message, failedTarget: string, error: GatewayError, chain: TargetBinding[], snapshot: RoutingSnapshot, attempts: number): Promise<void> {
    for (const binding of chain) {
      try {
        if (binding.kind === 'deadletter') {
          await this.#deadLetter(message, failedTarget, reasonFor(error), attempts, error.message);
          return;
        }
        if (binding.kind === 'publish') {
          await this.#publish(message, binding.key);
          return;
        }
        await this.#lane(binding.name, snapshot).submit(message);
        return;
      } catch (err) {
        error = toGatewayError(err);
        this.#deps.logger.debug({ target: binding.kind === 'target' ? binding.name : binding.kind, err: error.message }, 'fallback target refused');
      }
    }
    await this.#deadLetter(message, failedTarget, reasonFor(error), attempts, error.message);
  }

  async #deadLetter(message: Message, target: string, reason: DeadLetterReason, attempts: number, error?: string): Promise<void> {
    const entry = { message, target, reason, attempts, ...(error !== undefined ? { error } : {}) };
    await this.#deps.deadletter.append(entry);
    this.counters.deadLettered++;
  }

  async #publish(message: Message, key: string): Promise<void> {
    await this.#deps.bus.publish(key === message.key ? message : { ...message, key });
    this.counters.published++;
  }

  /**
   * A request-mode rule hit by a sender that cannot wait (an MQTT publish, an HTTP fire-and-forget
   * POST): the reply goes to the message's `replyTo` (MQTT 5 response topic), if it has one.
   */
  async #forwardReply(request: Message, reply: TargetReply): Promise<void> {
    if (request.replyTo === undefined) return;
    const answer: Message = {
      ...request,
      id: newMessageId(),
      key: request.replyTo,
      payload: reply.payload,
      headers: reply.headers ?? {},
      source: { protocol: 'internal' },
      timestamp: Date.now(),
    };
    delete answer.replyTo;
    if (reply.contentType !== undefined) answer.contentType = reply.contentType;
    else delete answer.contentType;
    await this.#publish(answer, answer.key);
  }

  async #request(message: Message, matches: RouteMatch[], snapshot: RoutingSnapshot, callerTimeoutMs?: number): Promise<DispatchResult> {
    const [first, ...rest] = matches;
    const [replyBinding, ...others] = first!.targets;
    const timeoutMs = Math.min(callerTimeoutMs ?? Infinity, first!.route.timeout ?? snapshot.requestTimeoutMs);
    const extra = [{ ...first!, targets: others }, ...rest];
    this.#checkCapacity(message, extra, snapshot);
    let reply: TargetReply;
    switch (replyBinding!.kind) {
      case 'target':
        reply = await this.#lane(replyBinding!.name, snapshot).submit(message, { timeoutMs });
        break;
      case 'publish':
        reply = await this.#requestSubscriber(message, replyBinding!.key, timeoutMs);
        break;
      case 'deadletter':
        await this.#deadLetter(message, 'deadletter', 'routed', 0);
        reply = { payload: Buffer.alloc(0) };
        break;
    }
    await Promise.all(extra.flatMap((match) => match.targets.map((binding) => this.#deliver(message, binding, match, snapshot))));
    return { id: message.id, reply };
  }

  /**
   * Request/reply through the bus: the request carries an inbox key as `replyTo`, and the
   * first message published there with the same correlation id is the reply.
   */
  async #requestSubscriber(message: Message, key: string, timeoutMs: number): Promise<TargetReply> {
    const correlationId = message.correlationId ?? message.id;
    const inbox = `_inbox/${message.id}`;
    let settle!: (reply: TargetReply) => void;
    const replied = new Promise<TargetReply>((resolve) => { settle = resolve; });
    const subscription = await this.#deps.bus.subscribe(inbox, (answer) => {
      if (answer.correlationId !== correlationId) return;
      const reply: TargetReply = { payload: answer.payload, headers: answer.headers };
      if (answer.contentType !== undefined) reply.contentType = answer.contentType;
      settle(reply);
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      const request: Message = { ...message, key, replyTo: inbox, correlationId };
      const delivered = await this.#deps.bus.deliverToOne(request);
      if (!delivered) throw new GatewayError('no_route', `no responder is subscribed to ${key}`);
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new GatewayError('upstream_timeout', `no reply on ${key} within ${timeoutMs} ms`)), timeoutMs);
      });
      return await Promise.race([replied, timedOut]);
    } finally {
      clearTimeout(timer);
      await subscription.close();
    }
  }

  #track(work: Promise<void>): void {
    this.#pending++;
    work.catch((err: unknown) => {
      this.#deps.logger.error({ err }, 'dead-letter write failed: message lost');
    }).finally(() => {
      this.#pending--;
      if (this.#pending === 0) for (const wake of this.#pendingWaiters.splice(0)) wake();
    });
  }

  /** resolves when no fallback or dead-letter work is running */
  settled(): Promise<void> {
    if (this.#pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#pendingWaiters.push(resolve));
  }
}
