// The Flex Consumption plan and the function app (Python 3.11, Linux). The app runs as the
// user-assigned identity: the host reaches its storage with identity-based connection
// settings (AzureWebJobsStorage__*), the code reaches Cosmos DB with DefaultAzureCredential
// (AZURE_CLIENT_ID picks the identity) and Application Insights with Entra ID. No key or
// connection secret is in the app settings.
param location string
param tags object
param name string
param planName string
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsConnectionString string
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Enabled'
@description('Subnet (delegated to Microsoft.App/environments) to integrate with; empty = none.')
param virtualNetworkSubnetId string = ''
@description('The app settings handlers/settings.py reads, by name.')
param settings object
param instrumentsFile string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

var hostSettings = {
  // The host's storage, identity-based (Flex Consumption): no AzureWebJobsStorage string.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  // Host telemetry and the app's OpenTelemetry export, both with Entra ID.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // DefaultAzureCredential (Cosmos DB) picks the user-assigned identity by this.
  AZURE_CLIENT_ID: identityClientId
}
var catalogSetting = empty(instrumentsFile) ? {} : { INSTRUMENTS_FILE: instrumentsFile }
var appSettings = union(hostSettings, settings, catalogSetting)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  #checkov:skip=CKV_AZURE_225:Flex Consumption (FC1) has no instance count to spread over zones in this template; zone redundancy is a property of the plan that is only available in some regions and is not required for a queue consumer that the host rebalances.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  #checkov:skip=CKV_AZURE_222:Public network access follows the publicNetworkAccess parameter (Disabled: the app and its deployment endpoint are reachable only from the virtual network, so deploy from a runner inside it).
  #checkov:skip=CKV_AZURE_17:The app has no HTTP trigger; it serves no inbound requests whose client certificates could be checked.
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales queue consumers from zero by queue length; messages wait safely in the queue, so no always-ready instances are required.
  #checkov:skip=CKV_AZURE_213:There is no HTTP endpoint to probe; the host's health is its queue processing, watched with the alerts in docs/operations.md.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'functions' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: publicNetworkAccess
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): { name: setting.key, value: setting.value }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

// No FTP or basic-auth publishing: deployments authenticate with Entra ID (OIDC in CI).
resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
