import type { Socket } from 'node:net';
import type { SendDone } from './driver.js';

/** Bytes of one arena: a few hundred small packets, or one large one and its own arena. */
const ARENA_BYTES = 64 * 1024;

/**
 * The bytes a client has to send in one turn of the event loop, written to its socket in one go.
 * On loopback every write is a system call that also runs the receiving side's TCP work, so a
 * sender that writes each packet on its own spends more on the kernel than on anything else (half
 * of a load worker's time, profiled). Packets are put straight into an arena and go out together
 * once the turn ends: the same bytes on the wire, in fewer segments. Written ranges are never
 * reused; a full arena is replaced, not recycled, since the socket may still hold what it wrote.
 */
export class Outbox {
  #arena = Buffer.allocUnsafe(ARENA_BYTES);
  /** the first byte not yet handed to the socket */
  #start = 0;
  #end = 0;
  /** called once this turn's bytes are written (QoS 0 sends, done once written) */
  #onWritten: SendDone[] = [];
  #scheduled = false;
  readonly #flush = () => this.flush();

  constructor(readonly socket: Socket) {}

  /**
   * Room for `length` bytes, to be filled at the returned offset of {@link bytes} in this turn.
   * Read `bytes` after reserving: a full arena is replaced by the reservation.
   */
  reserve(length: number): number {
    if (this.#end + length > this.#arena.length) {
      this.flush();
      this.#arena = Buffer.allocUnsafe(Math.max(ARENA_BYTES, length));
      this.#start = 0;
      this.#end = 0;
    }
    const at = this.#end;
    this.#end += length;
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flush);
    }
    return at;
  }

  get bytes(): Buffer {
    return this.#arena;
  }

  /** `done` is called once the bytes reserved so far are written, with the socket's error if that failed. */
  whenWritten(done: SendDone): void {
    this.#onWritten.push(done);
  }

  flush(): void {
    this.#scheduled = false;
    if (this.#end === this.#start) return;
    const chunk = this.#arena.subarray(this.#start, this.#end);
    this.#start = this.#end;
    if (this.socket.destroyed) return this.#fail('connection closed');
    if (this.#onWritten.length === 0) {
      this.socket.write(chunk);
      return;
    }
    const written = this.#onWritten;
    this.#onWritten = [];
    this.socket.write(chunk, (err) => {
      for (const done of written) done(err?.message);
    });
  }

  #fail(reason: string): void {
    const written = this.#onWritten;
    this.#onWritten = [];
    for (const done of written) done(reason);
  }
}
