/**
 * citus-ha: every decision that keeps a Citus coordinator's pg_dist_node in step with an HA
 * manager, as a sandboxed WebAssembly component (contract 0.4.0), embedded in Node.
 *
 * ```js
 * import { Agent, PgSession } from 'citus-ha';
 * const agent = await Agent.start({ group: 0, database: 'citus' }, 'coord1',
 *   'postgres://10.0.0.1:5432/citus', new PgSession('postgres://localhost/citus'));
 * await agent.heartbeat(nowMs, view);   // a ClusterView from the DCS
 * await agent.runTurn(nowMs);           // runs the statements on the session
 * ```
 * @module
 */

export { Agent } from './agent.js';
export { CitusHaError, InvalidInput, PolicyLoadError, PolicyTrap, SwapRefused } from './errors.js';
export { CONTRACT, Handler, Policy, TRAPS_BEFORE_FALLBACK } from './policy.js';
export { DEFAULT_LIMITS } from './runtime/sandbox.js';
export { FaultySession, PgSession, SimSession } from './session.js';
export { Simulator } from './sim.js';
export { Batch, KINDS, Results, endsBatch, kindOf, resultLine, rowFromList, rowToList, statementLine } from './statements.js';
export { ViewWriter, clusterFromDcs, groupBody, viewText } from './view.js';
export { ScenarioError, parseScenario, replay } from './replay.js';

/**
 * @typedef {import('./policy.js').CitusConfig} CitusConfig
 * @typedef {import('./policy.js').ReplicationSlot} ReplicationSlot
 * @typedef {import('./policy.js').SuperuserAuth} SuperuserAuth
 * @typedef {import('./policy.js').BootstrapStep} BootstrapStep
 * @typedef {import('./policy.js').EventOutcome} EventOutcome
 * @typedef {import('./policy.js').Metrics} Metrics
 * @typedef {import('./runtime/sandbox.js').Limits} Limits
 * @typedef {import('./runtime/sandbox.js').LogSink} LogSink
 * @typedef {import('./session.js').Session} Session
 * @typedef {import('./statements.js').Statement} Statement
 * @typedef {import('./statements.js').StatementResult} StatementResult
 * @typedef {import('./statements.js').PgDistRow} PgDistRow
 * @typedef {import('./statements.js').NodeRole} NodeRole
 * @typedef {import('./view.js').ClusterView} ClusterView
 * @typedef {import('./view.js').GroupView} GroupView
 * @typedef {import('./view.js').Member} Member
 */
