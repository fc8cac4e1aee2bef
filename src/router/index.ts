/** The rule router: compile `routes:` once per (re)load, then match every message against it. */
export { compileRouteTable } from './route-table.js';
export type {
  CompiledRoute,
  LossReason,
  RoutableMessage,
  RouteDecision,
  RouteExplanation,
  RouteMatch,
  RouteTable,
  TargetBinding,
} from './types.js';
