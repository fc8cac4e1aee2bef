import { LocalQueueStore } from './local-queue.js';
import type { RecoveryReport } from './store.js';

/** The `none` sync policy: queues in memory only, lost with the process. */
export class MemoryQueueStore extends LocalQueueStore {
  readonly recovery: RecoveryReport = { targets: [], records: 0, corrupt: 0, torn: 0, segments: 0, durationMs: 0 };

  constructor() {
    super(undefined);
  }

  async close(): Promise<void> {
    this.closeQueues();
  }
}
