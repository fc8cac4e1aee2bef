import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';
import { ERRORS, GatewayError, type ErrorCode } from './errors.js';
import { MAX_KEY_BYTES } from './topic/rules.js';

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

/** The headers a problem answer carries besides its content type: credentials asked for, when to retry. */
function problemHeaders(err: GatewayError): [string, string][] {
  const headers: [string, string][] = [];
  if (err.code === 'unauthenticated') headers.push(['www-authenticate', 'Basic realm="junction", Bearer realm="junction"']);
  if (err.details.retryAfterMs !== undefined) {
    // Retry-After is in whole seconds (RFC 9110 §10.2.3); round up so a client never retries early.
    headers.push(['retry-after', String(Math.max(1, Math.ceil(err.details.retryAfterMs / 1000)))]);
  }
  return headers;
}

/** with the charset fastify would add to it */
const PROBLEM_JSON = 'application/problem+json; charset=utf-8';

export function sendProblem(reply: FastifyReply, err: GatewayError, instance?: string): FastifyReply {
  const problem = problemOf(err, instance);
  for (const [name, value] of problemHeaders(err)) reply.header(name, value);
  return reply.code(problem.status).type(PROBLEM_JSON).send(JSON.stringify(problem));
}

/** sendProblem for a request answered on Node's response, without fastify (see HttpMount.answerDirectly). */
export function writeProblem(response: ServerResponse, err: GatewayError, instance?: string): void {
  const problem = problemOf(err, instance);
  const body = JSON.stringify(problem);
  const headers = ['content-type', PROBLEM_JSON, 'content-length', String(Buffer.byteLength(body))];
  for (const [name, value] of problemHeaders(err)) headers.push(name, value);
  response.writeHead(problem.status, headers);
  response.end(body);
}

/** A request Node's HTTP parser refused before any route saw it, as the bytes to answer it with. */
export interface ClientErrorAnswer {
  code: ErrorCode;
  /** a whole HTTP/1.1 response */
  response: string;
}

/**
 * The answer to an HTTP server's 'clientError' (there is no reply object, only the socket), or
 * undefined when the client is gone (its connection reset, or closed in the middle of a request).
 * Its status is HTTP's own rather than the code's: 431 for a
 * request head over `maxHeadBytes`, 408 for one that did not arrive in time, 400 otherwise.
 */
export function clientErrorAnswer(err: NodeJS.ErrnoException, maxHeadBytes: number): ClientErrorAnswer | undefined {
  if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE') return undefined;
  const [error, status] = err.code === 'HPE_HEADER_OVERFLOW'
    ? [new GatewayError('too_large', `the request line and headers exceed ${maxHeadBytes} bytes (a key is at most ${MAX_KEY_BYTES} bytes)`), 431]
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [new GatewayError('bad_request', 'the request did not arrive in time'), 408]
      : [new GatewayError('bad_request', `malformed HTTP request (${err.code ?? err.message})`), 400];
  return { code: error.code, response: problemResponse(error, status) };
}

/**
 * A whole HTTP/1.1 response carrying the problem, for a socket that has no reply object (a
 * request Node's parser refused, an upgrade to a path that takes none); the connection closes after it.
 */
export function problemResponse(err: GatewayError, status: number = ERRORS[err.code].http, instance?: string): string {
  const body = JSON.stringify({ ...problemOf(err, instance), status });
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
