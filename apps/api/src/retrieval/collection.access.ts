import type { Principal } from '@app/auth';
import type { CollectionAccessor } from '@app/retrieval';

/**
 * The caller as retrieval sees it. Without a principal (a route that needs no key) the caller is
 * `anonymous`, which owns nothing and sees shared collections only.
 */
export function accessorOf(caller: Principal | undefined): CollectionAccessor {
  return { id: caller?.id ?? 'anonymous', admin: caller?.scopes.includes('admin') ?? false };
}
