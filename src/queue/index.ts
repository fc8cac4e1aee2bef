import { DiskQueueStore } from './disk-store.js';
import { MemoryQueueStore } from './memory-store.js';
import type { QueueStore, SyncPolicy } from './store.js';

export { DirectoryInUseError } from './dir-lock.js';
export type { AppendOptions, Appended, QueueLimits, QueueOutcome, QueueRecord, QueueStore, RecoveryReport, SyncPolicy, TargetQueue } from './store.js';
export { DEFAULT_SEGMENT_BYTES, DiskQueueStore, type DiskStoreOptions } from './disk-store.js';
export { MemoryQueueStore } from './memory-store.js';

export interface StorageSettings {
  dir: string;
  sync: SyncPolicy;
  segmentBytes?: number;
  /** see DiskStoreOptions.onError */
  onError: (error: Error) => void;
}

/** The store for the `storage` settings: `none` keeps queues in memory, `os` and `fsync` on disk. */
export function openQueueStore(settings: StorageSettings): Promise<QueueStore> {
  if (settings.sync === 'none') return Promise.resolve(new MemoryQueueStore());
  return DiskQueueStore.open({ ...settings, sync: settings.sync });
}
