import type { Metadata } from '@grpc/grpc-js';
import { GatewayError, tokenFromAuthorization, type AccessControl, type Identity } from '../../src/index.js';

/**
 * Who makes each call. gRPC has no handshake to authenticate once: every call carries its
 * credentials (`authorization` metadata, Bearer or Basic, as on HTTP and WebSocket); the shared
 * auth layer remembers verified secrets, so a call does not pay the password hash each time.
 */
export function identify(metadata: Metadata, access: AccessControl): Promise<Identity> {
  const value = metadata.get('authorization')[0];
  return access.authenticateToken(value === undefined ? undefined : tokenFromAuthorization(String(value)));
}

export function forbidden(action: string, what: string): GatewayError {
  return new GatewayError('forbidden', `not allowed to ${action} ${what}`);
}
