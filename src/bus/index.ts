export type { Bus, BusHandler, BusSubscription, SubscribeOptions } from './bus.js';
export { LocalBus } from './local-bus.js';
