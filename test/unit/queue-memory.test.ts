import { MemoryQueueStore } from '../../src/queue/index.js';
import { describeQueueStore } from '../queue/store-suite.js';

describeQueueStore({
  name: 'memory',
  persistent: false,
  fixture: async () => ({
    open: async () => new MemoryQueueStore(),
    cleanup: async () => {},
  }),
});
