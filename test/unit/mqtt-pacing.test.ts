import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { SubscriberPacing, type PacedConnection } from '../../adapters/mqtt/pacing.js';
import { fakeClock } from '../helpers/clock.js';

/** A subscriber's connection whose socket the test fills and drains. */
class Connection extends EventEmitter implements PacedConnection {
  needsDrain = false;
  destroyed = false;

  drain(): void {
    this.needsDrain = false;
    this.emit('drain');
  }
}

/** Pacing on a fake clock, with "aedes has written this turn's deliveries" in the test's hands. */
function pacing() {
  const clock = fakeClock();
  const checks: (() => void)[] = [];
  const counts = { paced: 0, behind: 0 };
  const subject = new SubscriberPacing({
    clock,
    patienceMs: 1000,
    afterWrites: (check) => checks.push(check),
    onPaced: () => counts.paced++,
    onBehind: () => counts.behind++,
  });
  return {
    subject, clock, counts,
    /** the end of a turn: the deliveries handed over are written */
    written: async () => {
      for (const check of checks.splice(0)) check();
      await clock.settle();
    },
  };
}

function settled(promise: Promise<void> | undefined): () => boolean {
  let done = false;
  void promise?.then(() => {
    done = true;
  });
  return () => done;
}

describe('SubscriberPacing', () => {
  it('takes deliveries once written when the socket has room, with one promise per subscriber and turn', async () => {
    const { subject, written, counts } = pacing();
    const connection = new Connection();
    const first = subject.taken(connection);
    expect(subject.taken(connection)).toBe(first);
    const taken = settled(first);
    await Promise.resolve();
    expect(taken()).toBe(false);
    await written();
    expect(taken()).toBe(true);
    expect(counts.paced).toBe(0);
    expect(subject.taken(connection)).not.toBe(first);
  });

  it('holds deliveries to a full socket until it drains', async () => {
    const { subject, written, clock, counts } = pacing();
    const connection = new Connection();
    const taken = settled(subject.taken(connection));
    connection.needsDrain = true;
    await written();
    await clock.advance(999);
    expect(taken()).toBe(false);
    connection.drain();
    await clock.settle();
    expect(taken()).toBe(true);
    expect(counts).toEqual({ paced: 1, behind: 0 });
  });

  it('lets go of a socket still full after the patience, and paces nobody to it until it drains', async () => {
    const { subject, written, clock, counts } = pacing();
    const connection = new Connection();
    const taken = settled(subject.taken(connection));
    connection.needsDrain = true;
    await written();
    await clock.advance(1000);
    expect(taken()).toBe(true);
    expect(counts.behind).toBe(1);
    expect(subject.taken(connection)).toBeUndefined();
    connection.drain();
    const again = settled(subject.taken(connection));
    expect(subject.taken(connection)).toBeDefined();
    connection.needsDrain = true;
    await written();
    expect(again()).toBe(false);
    connection.drain();
    await clock.settle();
    expect(again()).toBe(true);
    expect(counts).toEqual({ paced: 2, behind: 1 });
  });

  it('does not wait for a connection that closes, or one already closed', async () => {
    const { subject, written, clock } = pacing();
    const connection = new Connection();
    const taken = settled(subject.taken(connection));
    connection.needsDrain = true;
    await written();
    connection.destroyed = true;
    connection.emit('close');
    await clock.settle();
    expect(taken()).toBe(true);
    expect(subject.taken(connection)).toBeUndefined();
    expect(clock.pending()).toBe(0);
  });

  it('takes a delivery to several subscribers once every one of them took this turn\'s deliveries', async () => {
    const { subject, written, clock } = pacing();
    const roomy = new Connection();
    const full = new Connection();
    const fanOut = subject.takenByAll([roomy, full]);
    expect(subject.takenByAll([roomy, full])).toBe(fanOut);
    const toRoomy = settled(subject.taken(roomy));
    const all = settled(fanOut);
    full.needsDrain = true;
    await written();
    expect(toRoomy()).toBe(true);
    expect(all()).toBe(false);
    full.drain();
    await clock.settle();
    expect(all()).toBe(true);
  });

  it('does not pace a fan-out to subscribers that are all behind or closed', () => {
    const { subject } = pacing();
    const closed = new Connection();
    closed.destroyed = true;
    expect(subject.takenByAll([closed, closed])).toBeUndefined();
  });
});
