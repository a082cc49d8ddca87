// Shared set-up of the DAP client tests: one `qstep dap` per describe block, driven
// by VS Code's debug-adapter test client, recording output and breakpoint events.
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const env = JSON.parse(process.env.QSTEP_DAP_TEST);

// Registers before/after hooks on the calling describe; returns the recorded state
// (`state.dc` is the client once started).
function adapterSession() {
  const state = { dc: null, outputs: [], changed: [] };
  before(async () => {
    state.dc = new DebugClient(env.qstep, 'dap', 'qstep');
    state.dc.defaultTimeout = 300000;
    state.dc.on('output', (e) => state.outputs.push(e.body));
    state.dc.on('breakpoint', (e) => state.changed.push(e.body.breakpoint));
    await state.dc.start();
  });
  after(() => state.dc.stop());  // disconnect: the adapter shuts the guest down and exits
  return state;
}

module.exports = { env, adapterSession };
