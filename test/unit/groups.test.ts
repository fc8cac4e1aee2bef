import { Writable } from 'node:stream';
import { pino } from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { LocalBus } from '../../src/bus/index.js';
import type { DeadLetterEntry } from '../../src/deadletter/store.js';
import { GatewayError } from '../../src/errors.js';
import { GroupManager, type GroupDelivery, type GroupMember, type GroupSettings } from '../../src/groups/group-manager.js';
import { silentLogger } from '../../src/log.js';
import { createMessage, type Message } from '../../src/message.js';
import { fakeClock, type FakeClock } from '../helpers/clock.js';

function message(text: string, options: { qos?: 0 | 1; priority?: number; expiresAt?: number } = {}): Message {
  return createMessage({ key: 'jobs/a', payload: Buffer.from(text), qos: options.qos ?? 1, priority: options.priority, expiresAt: options.expiresAt, source: { protocol: 'internal' } });
}

/** A member that takes what it is offered while `room` says so, and holds it until told. */
class TestMember implements GroupMember {
  readonly held: GroupDelivery[] = [];
  readonly texts: string[] = [];
  room = true;

  offer(delivery: GroupDelivery): boolean {
    if (!this.room) return false;
    this.held.push(delivery);
    this.texts.push(delivery.message.payload.toString());
    return true;
  }

  settleAll(): void {
    for (const delivery of this.held.splice(0)) delivery.settle();
  }
}

describe('groups of competing consumers', () => {
  let clock: FakeClock;
  let bus: LocalBus;
  let settings: GroupSettings;
  let deadLetters: DeadLetterEntry[];
  let manager: GroupManager;

  beforeEach(() => {
    clock = fakeClock();
    bus = new LocalBus((err) => { throw err; });
    settings = { maxQueue: 4, maxInflight: 2, ackTimeout: 1000, retention: 60_000, maxGroups: 2, maxQueuedBytes: Infinity };
    deadLetters = [];
    manager = new GroupManager({
      bus, clock, logger: silentLogger(), settings: () => settings,
      deadLetter: async (entry) => {
        deadLetters.push(entry);
      },
    });
  });

  const publish = (...messages: Message[]) => Promise.all(messages.map((m) => bus.publish(m)));
  const stats = () => manager.stats()[0]!;

  it('gives each message to one member, in turn', async () => {
    const members = [new TestMember(), new TestMember(), new TestMember()];
    for (const m of members) await manager.join('g', 'jobs/#', m);
    settings.maxInflight = 100;
    await publish(...Array.from({ length: 9 }, (_, i) => message(`m${i}`)));
    expect(members.map((m) => m.texts)).toEqual([['m0', 'm3', 'm6'], ['m1', 'm4', 'm7'], ['m2', 'm5', 'm8']]);
    for (const m of members) m.settleAll();
    expect(stats()).toMatchObject({ members: 3, accepted: 9, delivered: 9, inFlight: 0, queued: 0, redelivered: 0 });
  });

  it('skips members without room, and holds messages until one has some, in priority order', async () => {
    const slow = new TestMember();
    const fast = new TestMember();
    const slowIn = await manager.join('g', 'jobs/#', slow);
    await manager.join('g', 'jobs/#', fast);
    slow.room = false;
    await publish(message('a'), message('b'));
    expect(fast.texts).toEqual(['a', 'b']);
    // fast holds maxInflight (2) unsettled, slow has no room: the rest waits, highest priority first.
    await publish(message('low', { priority: 1 }), message('high', { priority: 9 }));
    expect(stats()).toMatchObject({ queued: 2, inFlight: 2 });
    slow.room = true;
    slowIn.ready();
    expect(slow.texts).toEqual(['high', 'low']);
  });

  it('hands what a leaving member held to another, and counts it redelivered', async () => {
    const first = new TestMember();
    const second = new TestMember();
    const firstIn = await manager.join('g', 'jobs/#', first);
    await publish(message('x'), message('y'));
    expect(first.texts).toEqual(['x', 'y']);
    await manager.join('g', 'jobs/#', second);
    firstIn.leave();
    expect(second.texts).toEqual(['x', 'y']);
    second.settleAll();
    // Settling what it no longer holds does nothing.
    first.settleAll();
    expect(stats()).toMatchObject({ members: 1, delivered: 2, redelivered: 2, inFlight: 0 });
  });

  it('hands a delivery not settled within ackTimeout to another member', async () => {
    const stuck = new TestMember();
    const other = new TestMember();
    await manager.join('g', 'jobs/#', stuck);
    await publish(message('x'));
    await manager.join('g', 'jobs/#', other);
    await clock.advance(999);
    expect(other.texts).toEqual([]);
    await clock.advance(1);
    expect(other.texts).toEqual(['x']);
    expect(stats().redelivered).toBe(1);
  });

  it('queues without members, then sheds the lowest priority to the dead-letter store', async () => {
    const member = new TestMember();
    const membership = await manager.join('g', 'jobs/#', member);
    membership.leave();
    await publish(message('p5', { priority: 5 }), message('p1', { priority: 1 }), message('p7', { priority: 7 }), message('p2', { priority: 2 }));
    await publish(message('p9', { priority: 9 }), message('p0', { priority: 0 }));
    expect(deadLetters.map((d) => [d.message.payload.toString(), d.target, d.reason])).toEqual([['p1', 'group:g', 'shed'], ['p0', 'group:g', 'shed']]);
    expect(stats()).toMatchObject({ members: 0, queued: 4, deadLettered: 2 });
    const late = new TestMember();
    settings.maxInflight = 10;
    await manager.join('g', 'jobs/#', late);
    expect(late.texts).toEqual(['p9', 'p7', 'p5', 'p2']);
  });

  it('bounds the bytes all groups queue together: the group holding the most sheds first', async () => {
    settings.maxQueue = 1000;
    settings.maxInflight = 100;
    // Names of one length: a message counts the same in both groups.
    const size = manager.bytesOf('idle', message('m0'));
    settings.maxQueuedBytes = size * 10;
    (await manager.join('idle', 'jobs/#', new TestMember())).leave();
    const busy = new TestMember();
    busy.room = false;
    const busyIn = await manager.join('busy', 'jobs/a', busy);
    // The group nobody consumes takes messages the busy one does not see, then both fill up.
    await publish(...Array.from({ length: 6 }, (_, i) => createMessage({ key: 'jobs/b', payload: Buffer.from(`d${i}`), qos: 1, source: { protocol: 'internal' } })));
    await publish(...Array.from({ length: 4 }, (_, i) => message(`m${i}`)));
    const byName = () => Object.fromEntries(manager.stats().map((s) => [s.name, s]));
    expect(manager.queuedBytes).toBe(size * 10);
    expect([byName().idle!.queued, byName().busy!.queued]).toEqual([6, 4]);
    // The idle group, holding the most, lost its newest to make room for the busy one's; past
    // that, what it is offered itself is refused rather than shed from the group holding less.
    expect(deadLetters.map((d) => `${d.target} ${d.message.payload.toString()}`)).toEqual([
      'group:idle m2', 'group:idle m1', 'group:idle m3', 'group:idle m0',
    ]);
    // A message larger than the whole bound is dead-lettered, not allowed to flush the others out.
    await publish(createMessage({ key: 'jobs/a', payload: Buffer.alloc(size * 11), qos: 1, source: { protocol: 'internal' } }));
    expect(manager.queuedBytes).toBe(size * 10);
    expect(deadLetters.at(-1)!.error).toContain('groups.maxQueuedBytes');
    // What a member takes leaves the count.
    busy.room = true;
    busyIn.ready();
    expect(byName().busy).toMatchObject({ queued: 0, queuedBytes: 0 });
    expect(manager.queuedBytes).toBe(size * 6);
  });

  it('says once, not once per message, that a full dead-letter store loses what groups shed', async () => {
    const lines: { msg: string; failures: number }[] = [];
    const sink = new Writable({ write(chunk: Buffer, _encoding, done) { lines.push(JSON.parse(chunk.toString()) as { msg: string; failures: number }); done(); } });
    const refusing = new GroupManager({
      bus, clock, logger: pino({ base: null }, sink), settings: () => settings,
      deadLetter: () => Promise.reject(new GatewayError('overloaded', 'the dead-letter store is full (deadletter.maxBytes)')),
    });
    (await refusing.join('g', 'jobs/#', new TestMember())).leave();
    await publish(...Array.from({ length: 100 }, (_, i) => message(`m${i}`)));
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.map((l) => l.msg)).toEqual(['dead-letter write failed: messages shed from groups are lost']);
    expect(refusing.stats()[0]).toMatchObject({ queued: settings.maxQueue, deadLettered: 100 - settings.maxQueue });
  });

  it('never hands out a message that expired while it waited', async () => {
    const member = new TestMember();
    const membership = await manager.join('g', 'jobs/#', member);
    member.room = false;
    await publish(message('old', { expiresAt: clock.now() + 100 }), message('fresh'));
    await clock.advance(100);
    member.room = true;
    membership.ready();
    expect(member.texts).toEqual(['fresh']);
    expect(stats().expired).toBe(1);
  });

  it('takes a settle made during the offer (qos 0) without recursing through a deep queue', async () => {
    settings.maxQueue = 50_000;
    const instant: GroupMember = { offer: (d) => { d.settle(); return true; } };
    const parked = new TestMember();
    const membership = await manager.join('g', 'jobs/#', parked);
    parked.room = false;
    await publish(...Array.from({ length: 20_000 }, (_, i) => message(`m${i}`, { qos: 0 })));
    membership.leave();
    await manager.join('g', 'jobs/#', instant);
    expect(stats()).toMatchObject({ delivered: 20_000, queued: 0 });
  });

  it('keeps groups apart by name and by pattern, bounds how many there are, and closes abandoned ones', async () => {
    const a = new TestMember();
    const b = new TestMember();
    const aIn = await manager.join('g', 'jobs/#', a);
    await manager.join('g', 'jobs/+', b);
    await publish(message('both'));
    expect([a.texts, b.texts]).toEqual([['both'], ['both']]);
    await expect(manager.join('h', 'jobs/#', new TestMember())).rejects.toMatchObject({ code: 'overloaded' });
    aIn.leave();
    await publish(message('kept'));
    await clock.advance(60_000 + 15_000);
    expect(manager.stats().map((s) => s.pattern)).toEqual(['jobs/+']);
    // What its last member held unsettled went back to the group, then to the dead-letter store with the rest.
    expect(deadLetters.map((d) => d.message.payload.toString())).toEqual(['both', 'kept']);
    await manager.join('h', 'jobs/#', new TestMember());
  });

  it('makes room for a new group by closing the one left without members the longest, never one with members', async () => {
    settings.maxGroups = 3;
    const kept = new TestMember();
    await manager.join('kept', 'jobs/#', kept);
    (await manager.join('old', 'jobs/#', new TestMember())).leave();
    await clock.advance(1000);
    (await manager.join('recent', 'jobs/#', new TestMember())).leave();
    await publish(message('held'));
    await manager.join('new', 'jobs/#', new TestMember());
    expect(manager.stats().map((s) => s.name)).toEqual(['kept', 'recent', 'new']);
    expect(manager.evicted).toBe(1);
    expect(deadLetters.map((d) => [d.target, d.message.payload.toString()])).toEqual([['group:old', 'held']]);
    expect(kept.texts).toEqual(['held']);
    await manager.join('newer', 'jobs/#', new TestMember());
    expect(manager.stats().map((s) => s.name)).toEqual(['kept', 'new', 'newer']);
    // Every group has a member now: one more is refused.
    await expect(manager.join('last', 'jobs/#', new TestMember())).rejects.toMatchObject({ code: 'overloaded' });
    expect(manager.evicted).toBe(2);
  });
});
