import type { Bus, BusSubscription } from '../bus/index.js';
import { realClock, type Clock, type Timer } from '../clock.js';
import type { DeadLetterEntry } from '../deadletter/store.js';
import { PriorityQueue } from '../delivery/priority-queue.js';
import { GatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { ThrottledLog } from '../throttled-log.js';
import { isExpired, MAX_PRIORITY, type Message } from '../message.js';
import { appendFrameBytes } from '../queue/codec.js';

/** The line logged (at error level, at most once per 10 s) while the dead-letter store refuses what groups shed. */
export const GROUP_SHED_LOST_ALERT = 'dead-letter write failed: messages shed from groups are lost';

/** One message handed to one member of a group. */
export interface GroupDelivery {
  readonly message: Message;
  /** The member is done with it: its client acknowledged it (qos 1), or it was sent (qos 0). */
  settle(): void;
  /** The member cannot deliver it (its client went away, or refused it): another member gets it. */
  release(): void;
}

/** What a protocol adapter puts in a group for one of its subscribers. */
export interface GroupMember {
  /**
   * Offers a delivery; false when the subscriber has no room now (a slow or full one), and the
   * group offers it to another member. A member that said no is offered nothing more until its
   * membership's `ready()`. A member that takes a delivery calls `settle` or `release` once.
   */
  offer(delivery: GroupDelivery): boolean;
}

export interface GroupMembership {
  /** The member has room again after refusing an offer. */
  ready(): void;
  /** The member leaves; what it holds unsettled goes to the others. */
  leave(): void;
}

export interface GroupSettings {
  /** messages waiting for a member, per group; past it the lowest priority is shed */
  maxQueue: number;
  /** deliveries a member holds unsettled at once */
  maxInflight: number;
  /** ms a member may hold a delivery unsettled before it goes to another member */
  ackTimeout: number;
  /** ms a group without members keeps collecting messages for members to come */
  retention: number;
  /** groups at once */
  maxGroups: number;
  /** bytes all groups' queues hold together (as the queue store counts a message); past it the group holding most sheds */
  maxQueuedBytes: number;
}

export interface GroupStats {
  name: string;
  pattern: string;
  members: number;
  queued: number;
  /** bytes of the queued messages, as groups.maxQueuedBytes counts them */
  queuedBytes: number;
  inFlight: number;
  /** messages the group took from the bus */
  accepted: number;
  /** settled by a member */
  delivered: number;
  /** handed to a member that did not settle them, so handed again (not a final state) */
  redelivered: number;
  /** shed from a full queue, or held when the group closed: in the dead-letter store */
  deadLettered: number;
  expired: number;
}

export interface GroupManagerDeps {
  bus: Pick<Bus, 'subscribe'>;
  settings: () => GroupSettings;
  deadLetter: (entry: DeadLetterEntry) => Promise<void>;
  logger: Logger;
  clock?: Clock;
}

interface Member {
  readonly member: GroupMember;
  inFlight: number;
  /** refused an offer and has not said it is ready since */
  full: boolean;
  left: boolean;
  readonly held: Set<Handle>;
}

/** One attempt at one member; settling or releasing it twice does nothing. */
class Handle implements GroupDelivery {
  done = false;
  timer: Timer | undefined;

  constructor(readonly message: Message, readonly holder: Member, readonly group: Group) {}

  settle(): void {
    this.group.finish(this, true);
  }

  release(): void {
    this.group.finish(this, false);
  }
}

/**
 * Competing consumers: a named group of subscribers on one pattern, whatever their protocols.
 * Each message matching the pattern goes to one member, round robin among those with room;
 * one a member does not settle (it disconnected, refused, or timed out) goes to another; while
 * no member has room it waits in a bounded queue, ordered by priority.
 */
class Group {
  readonly members: Member[] = [];
  readonly #queue = new PriorityQueue<Message>();
  #queuedBytes = 0;
  subscription: BusSubscription | undefined;
  #rotation = 0;
  #inFlight = 0;
  /** a pump is running: a settle made during an offer must not start another, or deep queues recurse */
  #pumping = false;
  #memberlessSince: number | undefined;
  readonly counts = { accepted: 0, delivered: 0, redelivered: 0, deadLettered: 0, expired: 0 };

  constructor(readonly name: string, readonly pattern: string, readonly manager: GroupManager) {}

  get inFlight(): number {
    return this.#inFlight;
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  get memberlessSince(): number | undefined {
    return this.#memberlessSince;
  }

  /** From the bus: every message matching the pattern. */
  readonly accept = (message: Message): void => {
    this.counts.accepted++;
    if (this.#queue.size === 0 && this.#place(message)) return;
    this.#enqueue(message);
  };

  join(member: GroupMember): Member {
    const state: Member = { member, inFlight: 0, full: false, left: false, held: new Set() };
    this.members.push(state);
    this.#memberlessSince = undefined;
    this.pump();
    return state;
  }

  leave(state: Member): void {
    if (state.left) return;
    state.left = true;
    this.members.splice(this.members.indexOf(state), 1);
    if (this.members.length === 0) this.#memberlessSince = this.manager.clock.now();
    for (const handle of [...state.held]) this.finish(handle, false);
  }

  ready(state: Member): void {
    if (!state.full) return;
    state.full = false;
    this.pump();
  }

  /** Hands the message to the next member with room; false when none has any. */
  #place(message: Message): boolean {
    const { maxInflight } = this.manager.settings();
    for (let tried = 0; tried < this.members.length; tried++) {
      const state = this.members[this.#rotation++ % this.members.length]!;
      if (state.full || state.inFlight >= maxInflight) continue;
      const handle = new Handle(message, state, this);
      state.inFlight++;
      state.held.add(handle);
      this.#inFlight++;
      if (!state.member.offer(handle)) {
        state.inFlight--;
        state.held.delete(handle);
        this.#inFlight--;
        state.full = true;
        continue;
      }
      if (!handle.done) {
        handle.timer = this.manager.clock.setTimeout(() => this.#timedOut(handle), this.manager.settings().ackTimeout);
        handle.timer.unref();
      }
      return true;
    }
    return false;
  }

  #timedOut(handle: Handle): void {
    handle.timer = undefined;
    this.manager.logger.debug({ group: this.name, id: handle.message.id }, 'group delivery not settled in time: handed to another member');
    this.finish(handle, false);
  }

  finish(handle: Handle, settled: boolean): void {
    if (handle.done) return;
    handle.done = true;
    if (handle.timer !== undefined) this.manager.clock.clearTimeout(handle.timer);
    const state = handle.holder;
    state.inFlight--;
    state.held.delete(handle);
    this.#inFlight--;
    if (settled) {
      this.counts.delivered++;
    } else {
      this.counts.redelivered++;
      // Back at the head of its priority: it has waited longest.
      if (!this.#place(handle.message)) this.#enqueue(handle.message, true);
    }
    this.pump();
  }

  #enqueue(message: Message, first = false): void {
    // A redelivered message has waited longest: it may shed others of its own priority.
    const outranks = message.priority + (first ? 1 : 0);
    if (this.#queue.size >= this.manager.settings().maxQueue) {
      const victim = this.#popLowest(outranks);
      if (victim === undefined) {
        this.#deadLetter(message, `group ${this.name} is full (groups.maxQueue)`);
        return;
      }
      this.#deadLetter(victim, `shed from group ${this.name} for a message of priority ${message.priority}`);
    }
    const bytes = this.manager.bytesOf(this.name, message);
    if (!this.manager.makeRoom(this, bytes, outranks)) {
      this.#deadLetter(message, `groups hold groups.maxQueuedBytes and group ${this.name} has nothing of lower priority to shed`);
      return;
    }
    if (first) this.#queue.unshift(message.priority, message);
    else this.#queue.push(message.priority, message);
    this.#held(bytes);
  }

  /**
   * Sheds this group's lowest-priority message to make room for another group's (any priority:
   * the group holding most bytes pays first), or for one of its own that outranks it.
   */
  shedFor(outranks: number): boolean {
    const victim = this.#popLowest(outranks);
    if (victim === undefined) return false;
    this.#deadLetter(victim, `shed from group ${this.name}: groups hold groups.maxQueuedBytes and this group holds the most`);
    return true;
  }

  #popLowest(below: number): Message | undefined {
    const victim = this.#queue.popLowest(below);
    if (victim !== undefined) this.#held(-this.manager.bytesOf(this.name, victim));
    return victim;
  }

  #held(bytes: number): void {
    this.#queuedBytes += bytes;
    this.manager.queuedBytes += bytes;
  }

  /** Hands queued messages out while members have room. */
  pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.size > 0) {
        const message = this.#queue.shift()!;
        const bytes = this.manager.bytesOf(this.name, message);
        this.#held(-bytes);
        if (isExpired(message, this.manager.clock.now())) {
          this.counts.expired++;
          continue;
        }
        if (!this.#place(message)) {
          this.#queue.unshift(message.priority, message);
          this.#held(bytes);
          return;
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  #deadLetter(message: Message, why: string): void {
    this.counts.deadLettered++;
    this.manager.deadLetter(message, this.name, why);
  }

  /** Closing: what waits goes to the dead-letter store, what members hold stays theirs to settle. */
  drain(why: string): void {
    for (const message of this.#queue.drain()) this.#deadLetter(message, why);
    this.#held(-this.#queuedBytes);
  }

  stats(): GroupStats {
    return {
      name: this.name,
      pattern: this.pattern,
      members: this.members.length,
      queued: this.#queue.size,
      queuedBytes: this.#queuedBytes,
      inFlight: this.#inFlight,
      ...this.counts,
    };
  }
}

/**
 * Every group of this gateway, by name and pattern. A group is created by its first member and
 * subscribes to the bus once; without members it keeps collecting for `retention`, then closes,
 * dead-lettering what it held.
 */
export class GroupManager {
  readonly #deps: GroupManagerDeps;
  readonly #groups = new Map<string, Group>();
  readonly clock: Clock;
  readonly logger: Logger;
  /** a full dead-letter store refuses every shed message: its own counters say how many, one line here says so */
  readonly #lost: ThrottledLog;
  /** bytes every group's queue holds together (groups.maxQueuedBytes) */
  queuedBytes = 0;
  /** groups without members closed before their retention ended, to make room (groups.maxGroups) */
  evicted = 0;
  #sweep: Timer | undefined;
  #closed = false;

  constructor(deps: GroupManagerDeps) {
    this.#deps = deps;
    this.clock = deps.clock ?? realClock;
    this.logger = deps.logger;
    this.#lost = new ThrottledLog(deps.logger, GROUP_SHED_LOST_ALERT);
  }

  settings(): GroupSettings {
    return this.#deps.settings();
  }

  /**
   * Joins `member` to the group `name` on `pattern` (a group is the pair: `$share/g/a/#` and
   * `$share/g/b/#` are two groups, as in MQTT 5). Refused with `overloaded` past groups.maxGroups.
   */
  async join(name: string, pattern: string, member: GroupMember): Promise<GroupMembership> {
    if (this.#closed) throw new GatewayError('overloaded', 'the gateway is shutting down', { retryAfterMs: 1000 });
    const id = `${name}\u0000${pattern}`;
    let group = this.#groups.get(id);
    if (!group) {
      const { maxGroups } = this.settings();
      if (this.#groups.size >= maxGroups && !this.#evictAbandoned()) throw new GatewayError('overloaded', `at most ${maxGroups} groups, every one with members (groups.maxGroups)`, { retryAfterMs: 1000 });
      group = new Group(name, pattern, this);
      this.#groups.set(id, group);
      group.subscription = await this.#deps.bus.subscribe(pattern, group.accept);
      this.#scheduleSweep();
    }
    const state = group.join(member);
    const joined = group;
    return {
      ready: () => joined.ready(state),
      leave: () => joined.leave(state),
    };
  }

  /** A queued message's size as groups.maxQueuedBytes counts it: as the queue store would store it. */
  bytesOf(group: string, message: Message): number {
    return appendFrameBytes(`group:${group}`, message);
  }

  /**
   * Sheds until `bytes` more fit within groups.maxQueuedBytes: from the group holding the most
   * bytes, so a group that hoards (say, one nobody consumes) pays before the others. False when
   * `group` itself holds the most and has nothing below `outranks`.
   */
  makeRoom(group: Group, bytes: number, outranks: number): boolean {
    const { maxQueuedBytes } = this.settings();
    if (bytes > maxQueuedBytes) return false;
    while (this.queuedBytes + bytes > maxQueuedBytes) {
      let largest = group;
      for (const other of this.#groups.values()) if (other.queuedBytes > largest.queuedBytes) largest = other;
      const shed = largest === group ? group.shedFor(outranks) : largest.shedFor(MAX_PRIORITY + 1);
      if (!shed) return false;
    }
    return true;
  }

  deadLetter(message: Message, group: string, why: string): void {
    this.#deps.deadLetter({ message, target: `group:${group}`, reason: 'shed', attempts: 0, error: why }).catch((err: unknown) => {
      this.#lost.report(err, { id: message.id, group });
    });
  }

  stats(): GroupStats[] {
    return [...this.#groups.values()].map((group) => group.stats());
  }

  /**
   * Makes room for a group someone joins by closing the one left without members the longest,
   * before its retention ends: otherwise a client that joins and leaves groups under made-up names
   * would hold every slot for `retention` and lock everyone else out of groups. False when every
   * group has members.
   */
  #evictAbandoned(): boolean {
    let oldest: [string, Group] | undefined;
    for (const entry of this.#groups) {
      const since = entry[1].memberlessSince;
      if (since !== undefined && (oldest === undefined || since < oldest[1].memberlessSince!)) oldest = entry;
    }
    if (oldest === undefined) return false;
    this.#close(...oldest, `group ${oldest[1].name} closed: no member, and groups.maxGroups reached`);
    this.evicted++;
    return true;
  }

  #close(id: string, group: Group, why: string): void {
    this.#groups.delete(id);
    void group.subscription?.close();
    group.drain(why);
  }

  /** Closes groups left without members for longer than `retention`. */
  #scheduleSweep(): void {
    if (this.#sweep !== undefined || this.#closed) return;
    const { retention } = this.settings();
    this.#sweep = this.clock.setTimeout(() => {
      this.#sweep = undefined;
      const now = this.clock.now();
      for (const [id, group] of this.#groups) {
        const since = group.memberlessSince;
        if (since === undefined || now - since < this.settings().retention) continue;
        this.#close(id, group, `group ${group.name} closed: no member for groups.retention`);
      }
      if (this.#groups.size > 0) this.#scheduleSweep();
    }, Math.max(1000, retention / 4));
    this.#sweep.unref();
  }

  /** Stops taking messages; what groups queue is dead-lettered. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sweep !== undefined) this.clock.clearTimeout(this.#sweep);
    for (const group of this.#groups.values()) {
      await group.subscription?.close();
      group.drain('the gateway stopped before a member took it');
    }
    this.#groups.clear();
  }
}
