// Data breakpoints, setVariable, disassemble/readMemory and the Verifier scope,
// driven by VS Code's debug-adapter test client. Run by tests/vm/test_dap.py.
const assert = require('assert');
const { env, adapterSession } = require('./client');

const SRC = env.source;
const V6 = env.packets[1];

async function vars(dc, ref) {
  return (await dc.variablesRequest({ variablesReference: ref })).body.variables;
}

async function scopesByName(dc) {
  const scopes = (await dc.scopesRequest({ frameId: 1 })).body.scopes;
  return Object.fromEntries(scopes.map((s) => [s.name, s.variablesReference]));
}

describe('qstep dap: watchpoints, setVariable, code and the verifier', function () {
  this.timeout(600000);
  const session = adapterSession();

  it('watches, sets and shows what the verifier knew', async () => {
    const { dc, outputs, changed } = session;
    const caps = (await dc.initializeRequest({ adapterID: 'qstep', linesStartAt1: true,
      columnsStartAt1: true, pathFormat: 'path' })).body;
    assert.ok(caps.supportsDataBreakpoints && caps.supportsSetVariable);
    const initialized = dc.waitForEvent('initialized');
    await dc.launchRequest({ program: env.object, packets: [V6, V6], maps: env.maps,
                             verifierLog: true });
    await initialized;
    await dc.setBreakpointsRequest({ source: { path: SRC }, breakpoints: [{ line: 144 }] });
    let stopped = dc.waitForEvent('stopped');
    await dc.configurationDoneRequest();
    await stopped;

    // Beside each register, what the verifier proved before this instruction.
    let scopes = await scopesByName(dc);
    assert.deepStrictEqual(Object.keys(scopes), ['Locals', 'Arguments', 'Registers', 'Verifier', 'Maps']);
    const regs = await vars(dc, scopes.Registers);
    const proved = await vars(dc, scopes.Verifier);
    assert.deepStrictEqual(proved.map((v) => v.name), regs.map((r) => r.name));
    proved.forEach((v, n) => assert.ok(v.value.startsWith(`${regs[n].value}   verifier: `), v.value));
    assert.match(proved[0].value, /verifier: map_value\(/);
    assert.match(proved[10].value, /verifier: fp0?$/);
    assert.ok(proved.every((v) => !v.value.includes('outside every state')));

    // The instruction with its x86 code; its bytes are the guest's memory there.
    const st = (await dc.stackTraceRequest({ threadId: 1 })).body.stackFrames;
    const ip = st[0].instructionPointerReference;
    const [insn] = (await dc.customRequest('disassemble', { memoryReference: ip, instructionCount: 1 })).body.instructions;
    assert.strictEqual(insn.instruction, 'r6 = *(u32 *)(r0 +4)  | mov ebx, dword ptr [rax + 4]');
    assert.deepStrictEqual([insn.address, insn.symbol, insn.line], [ip, 'process_packet+15', 144]);
    const bytes = insn.instructionBytes.replace(/ /g, '');
    const mem = (await dc.customRequest('readMemory', { memoryReference: ip, count: bytes.length / 2 })).body;
    assert.strictEqual(Buffer.from(mem.data, 'base64').toString('hex'), bytes);

    // A write watchpoint on a member of a stack struct.
    const locals = await vars(dc, scopes.Locals);
    const tkey = locals.find((v) => v.name === 'tkey');
    await vars(dc, tkey.variablesReference);
    const info = (await dc.customRequest('dataBreakpointInfo', {
      variablesReference: tkey.variablesReference, name: 'tunnel_id' })).body;
    assert.strictEqual(info.dataId, 'tkey.tunnel_id');
    assert.deepStrictEqual(info.accessTypes, ['write', 'read', 'readWrite']);
    const [dbp] = (await dc.customRequest('setDataBreakpoints', { breakpoints: [
      { dataId: info.dataId, accessType: 'write' }] })).body.breakpoints;
    assert.strictEqual(dbp.verified, true, dbp.message);
    stopped = dc.waitForEvent('stopped');
    await dc.continueRequest({ threadId: 1 });
    const hit = (await stopped).body;
    assert.deepStrictEqual([hit.reason, hit.hitBreakpointIds], ['data breakpoint', [dbp.id]]);
    assert.strictEqual(hit.text, 'Hardware watchpoint 1: tkey.tunnel_id\n' +
      'accessed by insn 167 (l4lb.bpf.c:161)\nOld value = 0\nNew value = 2');

    // Removed again (after the run the kernel may reuse that stack slot).
    assert.deepStrictEqual((await dc.customRequest('setDataBreakpoints', { breakpoints: [] })).body.breakpoints, []);

    // Refused: the frame pointer (a kernel pointer).
    await assert.rejects(dc.setVariableRequest({ variablesReference: (await scopesByName(dc)).Registers,
      name: 'r10', value: '0' }), /r10 holds a kernel pointer \(0xffff[0-9a-f]+\); only scalars may be set/);

    // A stack variable before the lookup it feeds, and r0 before the return.
    await dc.setBreakpointsRequest({ source: { path: SRC }, breakpoints: [{ line: 166 }, { line: 235 }] });
    stopped = dc.waitForEvent('stopped');
    await dc.continueRequest({ threadId: 1 });
    await stopped;
    scopes = await scopesByName(dc);
    await vars(dc, scopes.Locals);
    const set = (await dc.setVariableRequest({ variablesReference: scopes.Locals, name: 'ctl_pos', value: '5' })).body;
    assert.strictEqual(set.value, '5');
    assert.strictEqual((await dc.evaluateRequest({ expression: 'ctl_pos', context: 'watch', frameId: 1 })).body.result, '5');
    stopped = dc.waitForEvent('stopped');
    await dc.continueRequest({ threadId: 1 });
    await stopped;  // line 235: process_packet returned through count_drop
    assert.strictEqual((await dc.evaluateRequest({ expression: '$r0', context: 'watch', frameId: 1 })).body.result, '0x2 (2)');
    scopes = await scopesByName(dc);
    await vars(dc, scopes.Registers);
    assert.strictEqual((await dc.setVariableRequest({ variablesReference: scopes.Registers, name: 'r0', value: '1' })).body.value, '0x1');
    // Packet 2, untouched.
    stopped = dc.waitForEvent('stopped');
    await dc.continueRequest({ threadId: 1 });
    await stopped;
    assert.deepStrictEqual(changed, []);
    stopped = dc.waitForEvent('stopped');
    await dc.continueRequest({ threadId: 1 });
    await stopped;
    const terminated = dc.waitForEvent('terminated');
    await dc.continueRequest({ threadId: 1 });
    await terminated;
    const lines = outputs.map((o) => o.output.split('\n')[0].replace(/, \d+ ns\]/, ']'));
    assert.deepStrictEqual(lines.filter((l) => l.startsWith('packet ')), [
      'packet 1: [program exited: retval 1 (TC_ACT_RECLASSIFY)]',
      'packet 2: [program exited: retval 7 (TC_ACT_REDIRECT)]']);
    const mapsText = outputs.find((o) => o.output.startsWith('maps after the runs:')).output;
    assert.ok(mapsText.includes('  drops:\n    1 = 1\n'), mapsText);
  });
});
