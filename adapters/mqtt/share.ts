import type { Client } from 'aedes';
import { groupProblem, patternProblem, type GroupDelivery, type GroupMember, type GroupMembership, type QoS } from '../../src/index.js';
import { connectionOf, onPuback, writePublish } from './direct.js';

/** `$share/<group>/<filter>`: MQTT 5's shared subscription, taken from 3.1.1 clients too. */
export const SHARE_PREFIX = '$share/';

/** What a shared subscription's filter names, or why it is not one. */
export function parseShare(topic: string): { group: string; filter: string } | { problem: string } {
  const rest = topic.slice(SHARE_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return { problem: 'a shared subscription is $share/<group>/<filter>' };
  const group = rest.slice(0, slash);
  const filter = rest.slice(slash + 1);
  const problem = groupProblem(group) ?? patternProblem(filter);
  return problem ? { problem } : { group, filter };
}

/**
 * One client's shared subscription: a member of a core group. Deliveries are written to the
 * client directly (./direct.ts) at the subscription's QoS (at most 1), and settle on the
 * client's PUBACK; the group hands what the client does not acknowledge to another member.
 */
export class ShareMember implements GroupMember {
  membership: GroupMembership | undefined;
  qos: QoS;
  /** unacknowledged qos 1 deliveries by packet id */
  readonly #pending = new Map<number, GroupDelivery>();
  #waiting = false;
  /** false until the client has its SUBACK (or CONNACK, for a restored session): no delivery may come first */
  #active = false;

  constructor(readonly client: Client, qos: QoS, readonly maxOutboundBuffer: () => number) {
    this.qos = qos;
  }

  offer(delivery: GroupDelivery): boolean {
    if (this.client.closed) return false;
    if (!this.#active) {
      this.#waiting = true;
      return false;
    }
    const connection = connectionOf(this.client);
    if (connection.outboundBytes > this.maxOutboundBuffer()) {
      if (!this.#waiting) {
        this.#waiting = true;
        connection.once('drain', () => {
          this.#waiting = false;
          this.membership?.ready();
        });
      }
      return false;
    }
    const { message } = delivery;
    const qos = Math.min(message.qos, this.qos) as 0 | 1;
    const messageId = writePublish(this.client, { topic: message.key, payload: message.payload, qos });
    if (messageId === undefined) return false;
    if (qos === 1) this.#pending.set(messageId, delivery);
    else delivery.settle();
    return true;
  }

  /** The client has been told of the subscription: deliveries may flow. */
  activate(): void {
    if (this.#active) return;
    this.#active = true;
    if (this.#waiting) {
      this.#waiting = false;
      this.membership?.ready();
    }
  }

  /** The client's PUBACK for one of this member's deliveries. */
  acknowledged(messageId: number): boolean {
    const delivery = this.#pending.get(messageId);
    if (delivery === undefined) return false;
    this.#pending.delete(messageId);
    delivery.settle();
    return true;
  }

  leave(): void {
    this.#pending.clear();
    this.membership?.leave();
  }
}

/** Every shared subscription of every client, and the PUBACKs that settle their deliveries. */
export class SharedSubscriptions {
  readonly #byClient = new WeakMap<Client, Map<string, ShareMember>>();

  get(client: Client, topic: string): ShareMember | undefined {
    return this.#byClient.get(client)?.get(topic);
  }

  add(client: Client, topic: string, member: ShareMember): void {
    let members = this.#byClient.get(client);
    if (!members) {
      members = new Map();
      this.#byClient.set(client, members);
      onPuback(client, (messageId) => {
        for (const m of members!.values()) if (m.acknowledged(messageId)) return;
      });
    }
    members.set(topic, member);
  }

  /** The client got its SUBACK for these subscriptions (or its CONNACK, `topics` undefined: every one). */
  activate(client: Client, topics?: readonly string[]): void {
    const members = this.#byClient.get(client);
    if (!members) return;
    for (const [topic, member] of members) if (topics === undefined || topics.includes(topic)) member.activate();
  }

  /** The client unsubscribed: it leaves the group, what it had not acknowledged goes to another member. */
  remove(client: Client, topic: string): void {
    const members = this.#byClient.get(client);
    const member = members?.get(topic);
    if (!member) return;
    members!.delete(topic);
    member.leave();
  }

  /** The client is gone. */
  removeAll(client: Client): void {
    const members = this.#byClient.get(client);
    if (!members) return;
    for (const member of members.values()) member.leave();
    members.clear();
  }
}
