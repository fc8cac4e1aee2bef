export { TAKEN, type Bus, type BusHandler, type BusOrigin, type BusSubscription, type SubscribeOptions } from './bus.js';
export { LocalBus } from './local-bus.js';
