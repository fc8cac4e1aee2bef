import { TAKEN, type Bus } from '../bus/index.js';
import type { DeadLetterEntry, DeadLetterReason, DeadLetterSink } from '../deadletter/store.js';
import { GatewayError, toGatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { isExpired, newMessageId, type Message, type Protocol } from '../message.js';
import { keyProblem } from '../topic/rules.js';
import type { ExpiredPolicy, RouteMatch, RouteTable, TargetBinding } from '../router/types.js';
import type { TargetReply } from '../targets/target.js';
import type { IngressLimiter } from '../protection/ingress-limiter.js';
import type { DispatchObserver } from '../metrics.js';
import type { Span } from '@opentelemetry/api';
import { endSpan, SpanKind, startSpan, traceparentOf, tracingOn } from '../tracing.js';
import { withTimeout } from '../timeouts.js';
import { emptied } from '../arrays.js';
import { ThrottledLog } from '../throttled-log.js';
import type { QueueRecord } from '../queue/index.js';
import { INBOX_PREFIX, Inboxes } from './inbox.js';
import type { DeliveryOutcome, Settlement, TargetLane } from './target-lane.js';

/**
 * What the rule that queued a message for a target says about how its stay there may end: where
 * a failure goes next, and whether an expiry is dead-lettered.
 */
interface QueuedBy {
  fallback: readonly TargetBinding[];
  expired: ExpiredPolicy;
}

/** What the sender is told once a message is accepted. */
export interface DispatchResult {
  id: string;
  /** the first target's reply, for requests */
  reply?: TargetReply;
  /** true when the message had expired at ingress and was dropped (and counted) */
  expired?: boolean;
}

export interface DispatchOptions {
  /** the sender waits for a reply (HTTP /v1/requests, WS `request`, gRPC `Request`) */
  expectReply?: boolean;
  /** how long the sender waits for that reply, in ms */
  timeoutMs?: number;
}

/** The live routing state. A dispatch reads it once, so each message sees exactly one table. */
export interface RoutingSnapshot {
  table: RouteTable;
  lanes: ReadonlyMap<string, TargetLane>;
  requestTimeoutMs: number;
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
  deadletter: DeadLetterSink;
  logger: Logger;
  limiter?: IngressLimiter;
  observer?: DispatchObserver;
  /** cluster mode: this node's id, and how an answer reaches an inbox of another node */
  cluster?: { node: string; answer(node: string, message: Message): Promise<void> };
}

/** Publishes waiting for the same promise of the bus: counted by one reaction when it resolves. */
interface PublishWait {
  readonly taking: Promise<void>;
  count: number;
  counted: Promise<void>;
}

/**
 * Messages accepted once the same promise settles (the publishes of one turn to the same MQTT
 * subscribers): one reaction accepts or refuses them all, so none costs a promise of its own.
 */
interface AcceptWait {
  readonly routed: Promise<unknown>;
  readonly protocols: Protocol[];
  /** performance.now() when each was dispatched, for the ingress latency */
  readonly started: number[];
  settled: Promise<void>;
}

function reasonFor(err: GatewayError): DeadLetterReason {
  if (err.details.shutdown) return 'shutdown';
  if (err.details.shed) return 'shed';
  if (err.details.breakerOpen) return 'breaker_open';
  if (err.details.retryable && (err.details.attempts ?? 0) > 1) return 'retries_exhausted';
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
  /** dispatches taken in and not settled yet: the gateway's work under way */
  #inflight = 0;
  #pendingWaiters: (() => void)[] = [];
  /** requests handed to a responder, waiting for its answer */
  readonly #inboxes: Inboxes;
  readonly #deadLetterFailures: ThrottledLog;
  /** the last publishes and acceptances waiting on a promise, which the next ones may share */
  #publishing: PublishWait | undefined;
  #accepting: AcceptWait | undefined;
  /** the emptied arrays of the last wait that ended, for the next: grown once rather than per wait */
  #spare: Pick<AcceptWait, 'protocols' | 'started'> | undefined;

  constructor(snapshot: RoutingSnapshot, deps: DispatcherDeps) {
    this.#snapshot = snapshot;
    this.#deps = deps;
    this.#inboxes = new Inboxes(deps.cluster?.node);
    this.#deadLetterFailures = new ThrottledLog(deps.logger, 'dead-letter write failed: the message stays in the queue store');
  }

  /** dispatches under way: routed, not yet accepted or refused */
  get inflight(): number {
    return this.#inflight;
  }

  get snapshot(): RoutingSnapshot {
    return this.#snapshot;
  }

  /** Swaps the routing state in one assignment: the atomic part of a reload. */
  swap(snapshot: RoutingSnapshot): void {
    this.#snapshot = snapshot;
  }

  /**
   * Not an async function: a publish whose targets all take it synchronously is routed and
   * accepted in this call, and only the bus hand-off is awaited (one promise), which shows in
   * the per-message cost of every protocol.
   */
  dispatch(message: Message, options: DispatchOptions = NO_OPTIONS): Promise<DispatchResult> {
    this.counters.received++;
    const started = performance.now();
    const span = tracingOn()
      ? startSpan(`junction.ingress ${message.source.protocol}`, message.traceparent, SpanKind.SERVER, { 'junction.key': message.key, 'junction.message_id': message.id })
      : undefined;
    // Downstream calls and deliveries continue this trace as children of the ingress span.
    if (span) message.traceparent = traceparentOf(span);
    try {
      const routed = this.#route(message, this.#snapshot, options);
      // Closures only when routing went asynchronous: the synchronous case is the common one.
      if (!(routed instanceof Promise)) return Promise.resolve(this.#accepted(message, started, span, routed));
      this.#inflight++;
      return routed.then((result) => {
        this.#inflight--;
        return this.#accepted(message, started, span, result ?? { id: message.id });
      }, (err: unknown) => {
        this.#inflight--;
        throw this.#refused(span, err);
      });
    } catch (err) {
      return Promise.reject(this.#refused(span, err));
    }
  }

  #accepted(message: Message, started: number, span: Span | undefined, result: DispatchResult): DispatchResult {
    this.counters.accepted++;
    this.#deps.observer?.accepted(message.source.protocol, (performance.now() - started) / 1000);
    endSpan(span);
    return result;
  }

  /**
   * `dispatch` for a sender that needs to know only when a message is accepted (an MQTT PUBLISH,
   * an HTTP publish): undefined when it was accepted before this returns; else a promise that
   * resolves once it is, or rejects with the GatewayError that refuses it, shared by the messages
   * waiting for the same hand-off. A message refused at once throws its GatewayError (with
   * tracing on, which needs the per-message path, the promise rejects with it instead).
   */
  accept(message: Message): Promise<void> | undefined {
    if (tracingOn()) return this.dispatch(message).then(nothing);
    this.counters.received++;
    const started = performance.now();
    let routed: DispatchResult | Promise<DispatchResult | void>;
    try {
      routed = this.#route(message, this.#snapshot, NO_OPTIONS);
    } catch (err) {
      throw this.#refused(undefined, err);
    }
    if (!(routed instanceof Promise)) {
      this.#accepted(message, started, undefined, routed);
      return undefined;
    }
    let wait = this.#accepting;
    if (wait === undefined || wait.routed !== routed) {
      wait = this.#awaitAcceptance(routed);
      this.#accepting = wait;
    }
    this.#inflight++;
    wait.protocols.push(message.source.protocol);
    wait.started.push(started);
    return wait.settled;
  }

  #awaitAcceptance(routed: Promise<unknown>): AcceptWait {
    const spare = this.#spare;
    this.#spare = undefined;
    const wait: AcceptWait = { routed, protocols: spare?.protocols ?? [], started: spare?.started ?? [], settled: TAKEN };
    wait.settled = routed.then(() => {
      this.#endWait(wait);
      this.counters.accepted += wait.protocols.length;
      const observer = this.#deps.observer;
      if (observer !== undefined) {
        const now = performance.now();
        for (let i = 0; i < wait.protocols.length; i++) observer.accepted(wait.protocols[i]!, (now - wait.started[i]!) / 1000);
      }
      this.#recycle(wait);
    }, (err: unknown) => {
      this.#endWait(wait);
      this.counters.rejected += wait.protocols.length;
      this.#recycle(wait);
      throw toGatewayError(err);
    });
    return wait;
  }

  /** A message dispatched from here on waits on a promise of its own. */
  #endWait(wait: AcceptWait): void {
    if (this.#accepting === wait) this.#accepting = undefined;
    this.#inflight -= wait.protocols.length;
  }

  #recycle({ protocols, started }: AcceptWait): void {
    emptied(protocols);
    emptied(started);
    this.#spare = { protocols, started };
  }

  #refused(span: Span | undefined, err: unknown): GatewayError {
    this.counters.rejected++;
    endSpan(span, err);
    return toGatewayError(err);
  }

  /** An answer another node sent to one of this node's inboxes; throws `no_route` when nobody waits there. */
  answer(message: Message): void {
    this.#inboxes.answer(message);
  }

  /**
   * A result now when every target took the message synchronously, else a promise of it; a
   * promise of nothing for deliveries under way (the result is then just the id: one promise less
   * per message than mapping each to it).
   */
  #route(message: Message, snapshot: RoutingSnapshot, options: DispatchOptions): DispatchResult | Promise<DispatchResult | void> {
    if (isExpired(message)) {
      this.counters.expired++;
      return { id: message.id, expired: true };
    }
    // An answer to a request goes to the request waiting for it, and nowhere else.
    if (message.key.startsWith(INBOX_PREFIX)) {
      const node = Inboxes.nodeOf(message.key);
      const cluster = this.#deps.cluster;
      if (cluster && node !== undefined && node !== cluster.node) return cluster.answer(node, message).then(() => ({ id: message.id }));
      this.#inboxes.answer(message);
      return { id: message.id };
    }
    const routeSpan = tracingOn() ? startSpan('junction.route', message.traceparent, SpanKind.INTERNAL, { 'junction.table_version': snapshot.table.version }) : undefined;
    const decision = snapshot.table.match({ key: message.key, protocol: message.source.protocol, headers: message.headers });
    const routeName = decision.matches[0]?.route.name ?? 'default';
    routeSpan?.setAttribute('junction.rules', decision.matches.map((m) => m.route.name).join(',') || `default:${decision.default}`);
    endSpan(routeSpan);
    this.#deps.observer?.received(message.source.protocol, routeName);
    if (decision.matches.length === 0) {
      if (decision.default === 'drop') throw new GatewayError('no_route', `no rule matches key ${message.key}`);
      if (options.expectReply) {
        return this.#requestSubscriber(message, message.key, replyWait(options.timeoutMs, snapshot.requestTimeoutMs)).then((reply) => ({ id: message.id, reply }));
      }
      return this.#publish(message, message.key) ?? { id: message.id };
    }
    // Indexed loops on the hot path: for…of made an iterator result per step here (heap profile).
    const matches = decision.matches;
    for (let i = 0; i < matches.length; i++) {
      const match = matches[i]!;
      checkPublishKeys(match, message.key);
      if (match.route.setPriority !== undefined) message.priority = match.route.setPriority;
    }
    const admitted = this.#deps.limiter?.admit(message, matches);
    if (admitted) return admitted.then(() => this.#routeAdmitted(message, matches, snapshot, options));
    return this.#routeAdmitted(message, matches, snapshot, options);
  }

  /** The rest of routing, once the rules' rate limits let the message in. */
  #routeAdmitted(message: Message, matches: readonly RouteMatch[], snapshot: RoutingSnapshot, options: DispatchOptions): DispatchResult | Promise<DispatchResult | void> {
    const first = matches[0]!;
    if (options.expectReply || first.route.mode === 'request') return this.#routeRequest(message, matches, snapshot, options);
    this.#checkCapacity(message, matches);
    return this.#deliverAll(message, matches) ?? { id: message.id };
  }

  async #routeRequest(message: Message, matches: readonly RouteMatch[], snapshot: RoutingSnapshot, options: DispatchOptions): Promise<DispatchResult> {
    const result = await this.#request(message, matches, snapshot, options.timeoutMs);
    if (!options.expectReply) await this.#forwardReply(message, result.reply!);
    return options.expectReply ? result : { id: message.id };
  }

  /**
   * Target lanes take the message synchronously; only publishes, dead-letter writes and the queue
   * store's durability (under `sync: fsync`) are awaited, so the common case (targets only, `os`
   * or `none`) allocates no promise per binding. A queue store that cannot write refuses the
   * whole message: the sender retries (targets that took it already may get it twice).
   */
  #deliverAll(message: Message, matches: readonly RouteMatch[]): Promise<void> | undefined {
    // The first wait alone, the others in an array: most messages have one (a publish) or none.
    let first: Promise<void> | undefined;
    let more: Promise<void>[] | undefined;
    for (let m = 0; m < matches.length; m++) {
      const match = matches[m]!;
      let queuedBy: QueuedBy | undefined;
      for (let b = 0; b < match.targets.length; b++) {
        const binding = match.targets[b]!;
        let pending: Promise<void> | undefined;
        if (binding.kind === 'target') {
          queuedBy ??= { fallback: match.fallback, expired: match.route.expired };
          try {
            pending = this.#enqueue(message, binding.name, queuedBy);
          } catch (err) {
            const error = toGatewayError(err);
            if (error.details.storage) {
              first?.catch(nothing);
              for (const wait of more ?? []) wait.catch(nothing);
              throw error;
            }
            // Refused before it was accepted there: straight down the fallback chain.
            pending = this.#tryChain(message, binding.name, error, queuedBy).then(nothing);
          }
        } else pending = this.#deliver(message, binding);
        if (pending === undefined) continue;
        if (first === undefined) first = pending;
        else (more ??= []).push(pending);
      }
    }
    if (more === undefined) return first;
    more.push(first!);
    return Promise.all(more).then(nothing);
  }

  /**
   * All-or-nothing acceptance: if a target without a fallback is full, nothing is sent
   * anywhere and the sender is told `overloaded`, so a retry cannot duplicate.
   */
  #checkCapacity(message: Message, matches: readonly RouteMatch[]): void {
    for (let m = 0; m < matches.length; m++) {
      const match = matches[m]!;
      if (match.fallback.length > 0) continue;
      for (let b = 0; b < match.targets.length; b++) {
        const binding = match.targets[b]!;
        if (binding.kind === 'target' && !this.#lane(binding.name).canAccept(message)) {
          throw new GatewayError('overloaded', `target ${binding.name} is at capacity`, { retryAfterMs: 1000 });
        }
      }
    }
  }

  /**
   * A target's lane in the routing state in force now, not in the one a message was routed with:
   * after a reload swapped a target, work that was still under way (a fallback after a failed
   * call, the rest of a request's targets after its reply) goes to the new lane, so a replaced
   * lane only finishes what it already had.
   */
  #lane(name: string): TargetLane {
    const lane = this.#snapshot.lanes.get(name);
    if (!lane) throw new GatewayError('internal', `target ${name} is not running`);
    return lane;
  }

  /** Resolves once a publish or dead-letter binding has the message; undefined when it has it already. */
  #deliver(message: Message, binding: Exclude<TargetBinding, { kind: 'target' }>): Promise<void> | undefined {
    return binding.kind === 'publish' ? this.#publish(message, binding.key) : this.#deadLetter(message, 'deadletter', 'routed', 0);
  }

  /**
   * Hands the message to a lane (or throws); a later failure continues down `chain`. Returns the
   * promise of the store's durability, when its sync policy has one.
   */
  #enqueue(message: Message, name: string, rule: QueuedBy): Promise<void> | undefined {
    const lane = this.#lane(name);
    this.#pending++;
    try {
      return lane.submit(message, this.#outcome(message, name, () => rule));
    } catch (err) {
      this.#done();
      throw err;
    }
  }

  /**
   * What becomes of a message a target lane took, nobody waiting for it: a failure goes down the
   * fallback chain, then to the dead-letter store; an expiry ends it, or dead-letters it when its
   * rule says so (the rule known only when it happens, for a recovered record). A message the
   * dead-letter store refuses too stays unsettled in the queue store.
   */
  #outcome(message: Message, target: string, rule: () => QueuedBy): DeliveryOutcome {
    const unlessRefused = (settlement: Promise<Settlement>): Promise<Settlement> => {
      const settled = settlement.catch((writeError: unknown) => {
        // A full dead-letter store logged that once, and counts its refusals.
        if (toGatewayError(writeError).details.deadLetterFull !== true) this.#deadLetterFailures.report(writeError, { id: message.id, target });
        return 'unsettled' as const;
      });
      void settled.finally(this.#done);
      return settled;
    };
    return {
      delivered: this.#done,
      expired: (attempts) => {
        if (rule().expired === 'drop') {
          this.#done();
          return undefined;
        }
        return unlessRefused(this.#deadLetter(message, target, 'expired', attempts, 'expired while queued').then(() => 'deadLettered' as const));
      },
      failed: (error, settle) => settle(unlessRefused(this.#tryChain(message, target, error, rule()))),
    };
  }

  /**
   * The outcome of a record recovery put back in a target's queue: its sender was acknowledged
   * before the restart, so it ends as the rule that sends its key to that target now says (a
   * failure follows its fallback chain, the rest of the chain when the target is itself a
   * fallback), else as a rule with neither: dead-lettered on failure, dropped on expiry.
   */
  recovered(target: string, record: QueueRecord): DeliveryOutcome {
    this.#pending++;
    const { message } = record;
    return this.#outcome(message, target, () => {
      const decision = this.#snapshot.table.match({ key: message.key, protocol: message.source.protocol, headers: message.headers });
      for (const match of decision.matches) {
        const { expired } = match.route;
        if (match.targets.some((b) => b.kind === 'target' && b.name === target)) return { fallback: match.fallback, expired };
        const at = match.fallback.findIndex((b) => b.kind === 'target' && b.name === target);
        if (at >= 0) return { fallback: match.fallback.slice(at + 1), expired };
      }
      return { fallback: [], expired: 'drop' };
    });
  }

  /**
   * Re-injects a dead-lettered message: to the target that gave up on it while that target
   * exists (so targets that already have it get no duplicate), else through the router.
   * A replay that fails again is dead-lettered again, as a new record.
   */
  async replay(message: Message, target: string): Promise<'target' | 'router'> {
    if (this.#snapshot.lanes.has(target)) {
      // It came from the dead-letter store, so it goes back there rather than vanish, expired too.
      await this.#enqueue(message, target, { fallback: [{ kind: 'deadletter' }], expired: 'deadletter' });
      return 'target';
    }
    await this.dispatch(message);
    return 'router';
  }

  /**
   * Tries the fallback chain in order; a message nobody takes ends in the dead-letter store,
   * so an accepted message is never lost.
   */
  async #tryChain(message: Message, failedTarget: string, error: GatewayError, rule: QueuedBy): Promise<Settlement> {
    const chain = rule.fallback;
    for (let i = 0; i < chain.length; i++) {
      const binding = chain[i]!;
      try {
        switch (binding.kind) {
          case 'deadletter':
            await this.#deadLetter(message, failedTarget, reasonFor(error), error.details.attempts ?? 0, error.message);
            return 'deadLettered';
          case 'publish':
            await this.#publish(message, binding.key);
            return 'rerouted';
          case 'target':
            // The message leaves this target only once the fallback's queue store has it.
            await this.#enqueue(message, binding.name, { fallback: chain.slice(i + 1), expired: rule.expired });
            return 'rerouted';
        }
      } catch (err) {
        error = toGatewayError(err);
        this.#deps.logger.debug({ target: binding.kind === 'target' ? binding.name : binding.kind, err: error.message }, 'fallback target refused');
      }
    }
    await this.#deadLetter(message, failedTarget, reasonFor(error), error.details.attempts ?? 0, error.message);
    return 'deadLettered';
  }

  #deadLetter(message: Message, target: string, reason: DeadLetterReason, attempts: number, error?: string): Promise<void> {
    return this.deadLetter({ message, target, reason, attempts, ...(error !== undefined ? { error } : {}) });
  }

  /** Writes a dead letter and counts it; throws what the dead-letter store throws (e.g. `overloaded` when full). */
  async deadLetter(entry: DeadLetterEntry): Promise<void> {
    const { target, reason } = entry;
    await this.#deps.deadletter.append(entry);
    this.counters.deadLettered++;
    this.#deps.observer?.deadLettered(target, reason);
  }

  /**
   * Resolves once the bus has the message; undefined when it had it on return. Publishes that wait
   * for the same promise of the bus (one turn's deliveries to the same MQTT subscribers) share
   * one reaction that counts them.
   */
  #publish(message: Message, key: string): Promise<void> | undefined {
    const taking = this.#deps.bus.publish(key === message.key ? message : { ...message, key });
    if (taking === TAKEN) {
      this.counters.published++;
      return undefined;
    }
    let wait = this.#publishing;
    if (wait === undefined || wait.taking !== taking) {
      wait = this.#awaitPublish(taking);
      this.#publishing = wait;
    } else wait.count++;
    return wait.counted;
  }

  #awaitPublish(taking: Promise<void>): PublishWait {
    const wait: PublishWait = { taking, count: 1, counted: TAKEN };
    const end = () => {
      if (this.#publishing === wait) this.#publishing = undefined;
    };
    wait.counted = taking.then(() => {
      end();
      this.counters.published += wait.count;
    }, (err: unknown) => {
      end();
      throw err;
    });
    return wait;
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

  async #request(message: Message, matches: readonly RouteMatch[], snapshot: RoutingSnapshot, callerTimeoutMs?: number): Promise<DispatchResult> {
    const [first, ...rest] = matches;
    const [replyBinding, ...others] = first!.targets;
    const timeoutMs = replyWait(callerTimeoutMs, first!.route.timeout);
    const extra = [{ ...first!, targets: others }, ...rest];
    this.#checkCapacity(message, extra);
    let reply: TargetReply;
    switch (replyBinding!.kind) {
      case 'target': {
        const lane = this.#lane(replyBinding!.name);
        // The sender is waiting: the failure is its answer, not a dead letter, and nothing needs
        // to survive a restart (transient), since nobody would be there to take the reply.
        reply = await new Promise<TargetReply>((resolve, reject) => {
          lane.submit(message, {
            delivered: resolve,
            expired: () => {
              reject(new GatewayError('upstream_timeout', 'the message expired while queued', { expired: true }));
              return undefined;
            },
            failed: (error, settle) => {
              settle(RETURNED);
              reject(error);
            },
          }, { timeoutMs, transient: true });
        });
        break;
      }
      case 'publish':
        reply = await this.#requestSubscriber(message, replyBinding!.key, timeoutMs);
        break;
      case 'deadletter':
        await this.#deadLetter(message, 'deadletter', 'routed', 0);
        reply = { payload: Buffer.alloc(0) };
        break;
    }
    await this.#deliverAll(message, extra);
    return { id: message.id, reply };
  }

  /**
   * Request/reply through the bus: the request goes to one responder with an inbox of the
   * gateway's own as `replyTo` and a correlation id of its own (src/delivery/inbox.ts); the
   * responder's answer, published there, settles it. The ids the requester gave stay labels.
   */
  async #requestSubscriber(message: Message, key: string, timeoutMs: number): Promise<TargetReply> {
    const inbox = this.#inboxes.open();
    try {
      const request: Message = { ...message, key, replyTo: inbox.key, correlationId: inbox.correlationId };
      const delivered = await this.#deps.bus.deliverToOne(request);
      if (!delivered) throw new GatewayError('no_route', `no responder is subscribed to ${key}`);
      return await withTimeout(inbox.reply, timeoutMs, () => new GatewayError('upstream_timeout', `no reply on ${key} within ${timeoutMs} ms`));
    } finally {
      inbox.close();
    }
  }

  /** One message a lane took has reached its final state. */
  readonly #done = (): void => {
    this.#pending--;
    if (this.#pending === 0) for (const wake of this.#pendingWaiters.splice(0)) wake();
  };

  /** resolves when no accepted message is waiting for its final outcome */
  settled(): Promise<void> {
    if (this.#pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#pendingWaiters.push(resolve));
  }
}

const RETURNED: Promise<Settlement> = Promise.resolve('returned');
/** A dispatch without options: one frozen object rather than a new one per message. */
const NO_OPTIONS: DispatchOptions = Object.freeze({});

/** How long a request waits for its reply: the sender's own wait, capped by the rule's or requests.timeout. */
function replyWait(senderMs: number | undefined, capMs: number): number {
  return Math.min(senderMs ?? Infinity, capMs);
}

/** A `{N}` template can produce an invalid key (e.g. empty); refuse before anything is accepted. */
function checkPublishKeys(match: RouteMatch, messageKey: string): void {
  checkBindingKeys(match, match.targets, messageKey);
  checkBindingKeys(match, match.fallback, messageKey);
}

function checkBindingKeys(match: RouteMatch, bindings: readonly TargetBinding[], messageKey: string): void {
  for (let i = 0; i < bindings.length; i++) {
    const binding = bindings[i]!;
    // The message's own key was checked at ingress; only keys a template made need a look.
    if (binding.kind !== 'publish' || binding.key === messageKey) continue;
    const problem = keyProblem(binding.key);
    if (problem) throw new GatewayError('bad_request', `route ${match.route.name} makes the publish key "${binding.key}", which is invalid: ${problem}`);
  }
}

/** What a settled delivery resolves to: nothing, so the dispatch result is just the id. */
function nothing(): void {}
