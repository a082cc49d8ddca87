// qstep's VS Code extension: starts `qstep dap` for the "qstep" debug type.
const vscode = require('vscode');

function qstepCommand() {
  return vscode.workspace.getConfiguration('qstep').get('path') || 'qstep';
}

function activate(context) {
  context.subscriptions.push(vscode.debug.registerDebugAdapterDescriptorFactory('qstep', {
    createDebugAdapterDescriptor() {
      return new vscode.DebugAdapterExecutable(qstepCommand(), ['dap']);
    },
  }));
  context.subscriptions.push(vscode.commands.registerCommand('qstep.debugThisProgram', async (uri) => {
    const file = (uri && uri.fsPath) || (vscode.window.activeTextEditor &&
                                         vscode.window.activeTextEditor.document.fileName);
    if (!file) {
      vscode.window.showErrorMessage('qstep: open a BPF object or C source first');
      return;
    }
    const packet = await vscode.window.showInputBox({
      prompt: 'Packet for the run (a file path or hex bytes)', ignoreFocusOut: true });
    if (!packet) return;
    await vscode.debug.startDebugging(vscode.workspace.getWorkspaceFolder(vscode.Uri.file(file)), {
      type: 'qstep', request: 'launch', name: 'qstep: debug this BPF program',
      program: file, packets: [packet], stopOnEntry: true,
    });
  }));
}

function deactivate() {}

module.exports = { activate, deactivate };
