// Starts `workbench dap` (Debug Adapter Protocol on stdio) for the debug types `workbench` and,
// unless Docker DX serves it, `dockerfile`. Plain JS, no build step, only the `vscode` API.
'use strict';

const path = require('path');
const vscode = require('vscode');

const DOCKER_DX = 'docker.docker';

/** The configured `workbench` command, resolved against the workspace folder where it is a path. */
function workbenchCommand(folder) {
  const setting = vscode.workspace.getConfiguration('workbench', folder).get('path') || 'workbench';
  const root = folder ? folder.uri.fsPath : undefined;
  let command = root ? setting.split('${workspaceFolder}').join(root) : setting;
  // A bare name is looked up on PATH; a relative path would otherwise depend on `cwd`.
  if (root && command.includes('/') && !path.isAbsolute(command)) {
    command = path.join(root, command);
  }
  return command;
}

class WorkbenchAdapterFactory {
  createDebugAdapterDescriptor(session) {
    const folder = session.workspaceFolder;
    const cwd = session.configuration.cwd || (folder ? folder.uri.fsPath : undefined);
    return new vscode.DebugAdapterExecutable(workbenchCommand(folder), ['dap'], cwd ? { cwd } : {});
  }
}

class WorkbenchConfigurationProvider {
  constructor(type) {
    this.type = type;
  }

  provideDebugConfigurations() {
    return [this.launchFor('${workspaceFolder}/Dockerfile')];
  }

  /** F5 with no launch.json: debug the Dockerfile open in the editor. */
  resolveDebugConfiguration(_folder, config) {
    if (config.type || config.request || config.name) {
      return config;
    }
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document.languageId !== 'dockerfile') {
      return config;
    }
    return this.launchFor(editor.document.uri.fsPath);
  }

  launchFor(dockerfile) {
    return {
      type: this.type,
      request: 'launch',
      name: 'Workbench: debug build',
      dockerfile,
      contextPath: '${workspaceFolder}',
    };
  }
}

/** Serve `type` with workbench; returns false when another extension already does. */
function serve(context, type, channel) {
  try {
    context.subscriptions.push(
      vscode.debug.registerDebugAdapterDescriptorFactory(type, new WorkbenchAdapterFactory()),
    );
  } catch (err) {
    channel.appendLine(`debug type "${type}" is served by another extension: ${err.message}`);
    return false;
  }
  context.subscriptions.push(
    vscode.debug.registerDebugConfigurationProvider(type, new WorkbenchConfigurationProvider(type)),
  );
  return true;
}

function activate(context) {
  const channel = vscode.window.createOutputChannel('Workbench DAP');
  context.subscriptions.push(channel);
  serve(context, 'workbench', channel);
  // Docker DX registers its own `dockerfile` adapter unconditionally; taking the type first would
  // make its activation fail, so leave the type to it whenever it is installed and enabled.
  if (vscode.extensions.getExtension(DOCKER_DX)) {
    channel.appendLine('Docker DX is installed: "dockerfile" stays its (buildx); use "type": "workbench".');
  } else {
    serve(context, 'dockerfile', channel);
  }
}

function deactivate() {}

module.exports = { activate, deactivate };
