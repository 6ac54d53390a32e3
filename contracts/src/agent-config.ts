/**
 * What the operator renders into an agent's configuration must pass the agent's own checks: the
 * bounds both sides apply.
 */

/**
 * The least `store.maxBytes` an agent takes (4 MiB): its store counts its database's allowance (at
 * least 1 MiB) and its folders (about 1 MiB on ext4) in that limit (agent/src/cache/store-db.ts).
 */
export const MIN_STORE_BYTES = 4 * 2 ** 20;
