import type { FastifyReply } from 'fastify';
import { ERRORS, type GatewayError } from './errors.js';

/** RFC 9457 problem details for a GatewayError: how every error of the HTTP listener is answered. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  field?: string;
  retryAfterMs?: number;
  upstreamStatus?: number;
}

export function problemOf(err: GatewayError, instance?: string): Problem {
  const spec = ERRORS[err.code];
  const problem: Problem = {
    type: `urn:junction:error:${err.code}`,
    title: spec.title,
    status: spec.http,
    detail: err.message,
    code: err.code,
  };
  if (instance !== undefined) problem.instance = instance;
  if (err.details.field !== undefined) problem.field = err.details.field;
  if (err.details.retryAfterMs !== undefined) problem.retryAfterMs = err.details.retryAfterMs;
  if (err.details.upstreamStatus !== undefined) problem.upstreamStatus = err.details.upstreamStatus;
  return problem;
}

export function sendProblem(reply: FastifyReply, err: GatewayError, instance?: string): FastifyReply {
  const problem = problemOf(err, instance);
  if (err.code === 'unauthenticated') reply.header('www-authenticate', 'Basic realm="junction", Bearer realm="junction"');
  if (err.details.retryAfterMs !== undefined) {
    // Retry-After is in whole seconds (RFC 9110 §10.2.3); round up so a client never retries early.
    reply.header('retry-after', String(Math.max(1, Math.ceil(err.details.retryAfterMs / 1000))));
  }
  return reply.code(problem.status).type('application/problem+json').send(JSON.stringify(problem));
}
