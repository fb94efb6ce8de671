// Cosmos DB (API for NoSQL): the account, database `tradeguard` and the contract's three
// containers with their partition keys, and indexing policies that index only what the app
// and its operator tools query. Key authentication is disabled: the app's identity holds
// the built-in Data Contributor role on the database (a SQL role assignment).
//
// Queries (everything else is a point read or a conditional write by id + partition key):
//   marks:       SELECT c.accountId, c._etag FROM c WHERE c.symbol = @symbol AND c.type = 'holder'
//   deadletters: SELECT * FROM c WHERE c.queue = @queue AND c.type = 'deadletter'   (replay-poison)
//   ledger:      SELECT * FROM c WHERE c.type = 'account' [AND c.accountId = @account] (devhost accounts)
param location string
param tags object
param name string
param databaseName string = 'tradeguard'
param serverless bool = true
param autoscaleMaxThroughput int = 1000
param continuousBackup bool = true
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Enabled'
param allowedIpRanges array = []
param appPrincipalId string
param operatorPrincipalId string = ''
param privateEndpointSubnetId string = ''
param cosmosDnsZoneId string = ''

// Built-in "Cosmos DB Built-in Data Contributor": read, write, query, delete items.
var dataContributor = '00000000-0000-0000-0000-000000000002'

var continuous = { type: 'Continuous', continuousModeProperties: { tier: 'Continuous7Days' } }
var periodic = {
  type: 'Periodic'
  periodicModeProperties: { backupIntervalInMinutes: 240, backupRetentionIntervalInHours: 8, backupStorageRedundancy: 'Zone' }
}

var containers = [
  { name: 'ledger', partitionKey: '/accountId', indexed: ['/type/?', '/accountId/?'] }
  { name: 'marks', partitionKey: '/symbol', indexed: ['/type/?', '/symbol/?', '/accountId/?'] }
  { name: 'deadletters', partitionKey: '/queue', indexed: ['/type/?', '/queue/?'] }
]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  #checkov:skip=CKV_AZURE_101:Public network access is a parameter (publicNetworkAccess); Disabled deploys a private endpoint.
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [{ locationName: location, failoverPriority: 0, isZoneRedundant: false }]
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    capabilities: serverless ? [{ name: 'EnableServerless' }] : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: publicNetworkAccess
    networkAclBypass: 'AzureServices'
    ipRules: [for range in allowedIpRanges: { ipAddressOrRange: range }]
    isVirtualNetworkFilterEnabled: false
    enableAutomaticFailover: false
    enableMultipleWriteLocations: false
    backupPolicy: continuousBackup ? continuous : periodic
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: { id: databaseName }
    options: serverless ? {} : { autoscaleSettings: { maxThroughput: autoscaleMaxThroughput } }
  }
}

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [
  for c in containers: {
    parent: database
    name: c.name
    properties: {
      resource: {
        id: c.name
        partitionKey: { paths: [c.partitionKey], kind: 'Hash', version: 2 }
        indexingPolicy: {
          indexingMode: 'consistent'
          automatic: true
          includedPaths: [for path in c.indexed: { path: path }]
          excludedPaths: [{ path: '/*' }, { path: '/"_etag"/?' }]
        }
        // marks: mark passes (partition '@passes') carry a per-item ttl; nothing else expires.
        defaultTtl: c.name == 'marks' ? -1 : null
      }
    }
  }
]

resource appData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, appPrincipalId, dataContributor)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributor}'
    principalId: appPrincipalId
    scope: '${account.id}/dbs/${databaseName}'
  }
}

// The operator: replay dead-lettered bodies, inspect accounts (python -m devhost ...).
resource operatorData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = if (!empty(operatorPrincipalId)) {
  parent: account
  name: guid(account.id, operatorPrincipalId, dataContributor)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributor}'
    principalId: operatorPrincipalId
    scope: '${account.id}/dbs/${databaseName}'
  }
}

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (!empty(privateEndpointSubnetId)) {
  name: 'pe-${name}'
  location: location
  tags: tags
  properties: {
    subnet: { id: privateEndpointSubnetId }
    privateLinkServiceConnections: [
      {
        name: 'sql'
        properties: { privateLinkServiceId: account.id, groupIds: ['Sql'] }
      }
    ]
  }
}

resource endpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (!empty(privateEndpointSubnetId)) {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [{ name: 'cosmos', properties: { privateDnsZoneId: cosmosDnsZoneId } }]
  }
}

output endpoint string = account.properties.documentEndpoint
output name string = account.name
