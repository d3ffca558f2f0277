// A stand-in for VS Code's extension host: loads editors/vscode/extension.js against a fake `vscode`
// module, activates it and prints, as JSON, the debug types it registered and the adapter command it
// gives for a session. Usage: node vscode_host.js EXTENSION_JS SCENARIO_JSON
// SCENARIO: {dockerDx: bool, setting: string|null, folder: string|null, configuration: {...},
//            editorFile: string|null, editorLanguage: string|null}
'use strict';

const Module = require('module');

const [extensionPath, scenarioJson] = process.argv.slice(2);
const scenario = JSON.parse(scenarioJson);
const factories = {};
const providers = {};
const log = [];

class DebugAdapterExecutable {
  constructor(command, args, options) {
    Object.assign(this, { command, args, options });
  }
}

const fake = {
  DebugAdapterExecutable,
  workspace: {
    getConfiguration: (section) => ({
      get: (key) => (section === 'workbench' && key === 'path' ? scenario.setting : undefined),
    }),
  },
  window: {
    activeTextEditor: scenario.editorFile
      ? { document: { languageId: scenario.editorLanguage, uri: { fsPath: scenario.editorFile } } }
      : undefined,
    createOutputChannel: () => ({ appendLine: (line) => log.push(line), dispose() {} }),
  },
  extensions: { getExtension: (id) => (scenario.dockerDx && id === 'docker.docker' ? {} : undefined) },
  debug: {
    registerDebugAdapterDescriptorFactory(type, factory) {
      if (factories[type]) {
        throw new Error('a DebugAdapterDescriptorFactory can only be registered once per a type.');
      }
      factories[type] = factory;
      return { dispose() {} };
    },
    registerDebugConfigurationProvider(type, provider) {
      providers[type] = provider;
      return { dispose() {} };
    },
  },
};

const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  return request === 'vscode' ? 'vscode' : resolve.call(this, request, ...rest);
};
require.cache.vscode = { id: 'vscode', filename: 'vscode', loaded: true, exports: fake };

const extension = require(extensionPath);
extension.activate({ subscriptions: [] });

const folder = scenario.folder ? { uri: { fsPath: scenario.folder } } : undefined;
const out = { types: Object.keys(factories).sort(), log, adapters: {}, resolved: {}, initial: {} };
for (const [type, factory] of Object.entries(factories)) {
  const session = { workspaceFolder: folder, configuration: { type, ...scenario.configuration } };
  const exe = factory.createDebugAdapterDescriptor(session);
  out.adapters[type] = { command: exe.command, args: exe.args, options: exe.options };
}
for (const [type, provider] of Object.entries(providers)) {
  out.resolved[type] = provider.resolveDebugConfiguration(folder, {});
  out.initial[type] = provider.provideDebugConfigurations(folder);
}
process.stdout.write(JSON.stringify(out));
