import { LocalBus } from '../../src/bus/index.js';
import { busSuite } from '../bus/bus-suite.js';

busSuite('in-process (LocalBus)', async () => {
  const bus = new LocalBus(() => undefined);
  return { bus, peer: bus, dispose: () => bus.close() };
});
