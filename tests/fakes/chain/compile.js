// Compile the test world's own Solidity (contracts/*.sol) with npm solc, offline: node compile.js OUT.json
// The AAVE contracts are never compiled here: they come as bytecode from @aave/core-v3's artifacts.
const solc = require('solc');
const fs = require('fs');
const path = require('path');
const dir = path.join(__dirname, 'contracts');
const sources = {};
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.sol')).sort()) {
  sources[f] = { content: fs.readFileSync(path.join(dir, f), 'utf8') };
}
const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === 'error');
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join('\n'));
  process.exit(1);
}
const result = { solc: solc.version() };
for (const file of Object.keys(out.contracts)) {
  for (const [name, c] of Object.entries(out.contracts[file])) {
    result[name] = { abi: c.abi, bytecode: '0x' + c.evm.bytecode.object };
  }
}
fs.writeFileSync(process.argv[2], JSON.stringify(result));
