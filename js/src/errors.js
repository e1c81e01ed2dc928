/**
 * The errors of citus-ha: input that cannot be used, a policy that stopped, a build that
 * cannot be loaded, a refused swap. All are `CitusHaError`s.
 * @module
 */

/** Base class of every error this package throws. */
export class CitusHaError extends Error {
  /** @param {string} message @param {ErrorOptions} [options] */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Input the policy cannot use: which field, and why. Nothing changed. */
export class InvalidInput extends CitusHaError {
  /** @param {string} field @param {string} reason */
  constructor(field, reason) {
    super(`${field}: ${reason}`);
    /** The input that is wrong (a path such as `cluster.members[0].name`). */
    this.field = field;
    /** What is wrong with it. */
    this.reason = reason;
  }
}

/**
 * A call into the policy did not return: it trapped, passed its deadline or ran out of
 * memory. The worker it ran in is gone; a `Handler` has already been restored from its last
 * snapshot in a fresh one when this reaches the caller.
 */
export class PolicyTrap extends CitusHaError {
  /**
   * @param {string} reason what stopped it, in the Rust host's words where it has them
   * @param {string} [build] the build's label @param {string} [call] the function called
   */
  constructor(reason, build = '', call = '') {
    super(`policy trapped: ${reason}`);
    this.reason = reason;
    this.build = build;
    this.call = call;
  }
}

/** A file that is not a policy component this package can run. */
export class PolicyLoadError extends CitusHaError {}

/** A candidate build was refused; the running one keeps running. */
export class SwapRefused extends CitusHaError {}
