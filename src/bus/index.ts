export type { Bus, BusHandler, BusOrigin, BusSubscription, SubscribeOptions } from './bus.js';
export { LocalBus } from './local-bus.js';
