// A smoke test of skiff's ECI front through Alibaba Cloud's official
// JavaScript SDK (@alicloud/eci20180808, signature V3 as it signs by
// default). Run by TestECIJavaScriptSDK with NODE_PATH pointing at a
// node_modules holding the SDK; prints one JSON object with what it saw.
const Eci = require('@alicloud/eci20180808');
const OpenApi = require('@alicloud/openapi-client');

async function main() {
  const cfg = new OpenApi.Config({
    accessKeyId: process.env.ECI_KEY, accessKeySecret: process.env.ECI_SECRET,
    endpoint: process.env.ECI_ENDPOINT, protocol: 'http', regionId: 'skiff',
  });
  if (process.env.ECI_SIGNATURE === 'v2') cfg.signatureAlgorithm = 'v2'; // signature 1.0 (HMAC-SHA1)
  const c = new Eci.default(cfg);
  const out = {};
  const regions = await c.describeRegions(new Eci.DescribeRegionsRequest({ regionId: 'skiff' }));
  out.region = regions.body.regions[0].regionId;

  const created = await c.createContainerGroup(new Eci.CreateContainerGroupRequest({
    regionId: 'skiff', containerGroupName: 'js-sdk', cpu: 0.5, memory: 0.5, restartPolicy: 'Always',
    tag: [new Eci.CreateContainerGroupRequestTag({ key: 'sdk', value: 'js' })],
    container: [new Eci.CreateContainerGroupRequestContainer({
      name: 'main', image: 'busybox', command: ['sleep', '3600'],
      environmentVar: [new Eci.CreateContainerGroupRequestContainerEnvironmentVar({ key: 'A', value: '1' })],
    })],
  }));
  const id = created.body.containerGroupId;
  out.id = id;

  const d = await c.describeContainerGroups(new Eci.DescribeContainerGroupsRequest({ regionId: 'skiff', containerGroupIds: JSON.stringify([id]) }));
  const g = d.body.containerGroups[0];
  out.describe = { total: d.body.totalCount, name: g.containerGroupName, cpu: g.cpu, env: g.containers[0].environmentVars[0].key, tag: g.tags[0].value };

  await c.updateContainerGroup(new Eci.UpdateContainerGroupRequest({
    regionId: 'skiff', containerGroupId: id,
    tag: [new Eci.UpdateContainerGroupRequestTag({ key: 'sdk', value: 'js2' })],
    container: [new Eci.UpdateContainerGroupRequestContainer({
      name: 'main', image: 'busybox', command: ['sleep', '7200'],
      environmentVar: [new Eci.UpdateContainerGroupRequestContainerEnvironmentVar({ key: 'B', value: '2' })],
    })],
  }));
  const st = await c.describeContainerGroupStatus(new Eci.DescribeContainerGroupStatusRequest({ regionId: 'skiff', containerGroupIds: JSON.stringify([id]) }));
  out.status = { total: st.body.totalCount, id: st.body.data[0].containerGroupId, phase: st.body.data[0].podStatus.phase };
  const d2 = await c.describeContainerGroups(new Eci.DescribeContainerGroupsRequest({ regionId: 'skiff', containerGroupIds: JSON.stringify([id]) }));
  const g2 = d2.body.containerGroups[0];
  out.updated = { tag: g2.tags[0].value, args: g2.containers[0].commands.concat(g2.containers[0].args), env: g2.containers[0].environmentVars.map(e => e.key + '=' + e.value) };
  const usage = await c.listUsage(new Eci.ListUsageRequest({ regionId: 'skiff' }));
  out.usage = usage.body.attributes;

  await c.deleteContainerGroup(new Eci.DeleteContainerGroupRequest({ regionId: 'skiff', containerGroupId: id }));
  try {
    await c.deleteContainerGroup(new Eci.DeleteContainerGroupRequest({ regionId: 'skiff', containerGroupId: 'g-nosuchgroup' }));
    out.notFound = 'no error';
  } catch (e) {
    out.notFound = { code: e.code, status: e.statusCode || (e.data && e.data.statusCode) };
  }
  console.log(JSON.stringify(out));
}

main().catch(e => { console.error(e && (e.stack || e.message || e)); if (e && e.data) console.error(JSON.stringify(e.data)); process.exit(1); });
