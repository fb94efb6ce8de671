// tradeguard's resources in one resource group: monitoring, the user-assigned identity,
// storage (queues + the deployment container), Cosmos DB, the optional private network and
// the Flex Consumption function app. Deployable on its own:
//   az deployment group create -g <rg> -f infra/resources.bicep -p environmentName=<name>
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
param environmentName string
param location string = resourceGroup().location
param tags object = {}
param principalId string = ''
@allowed(['User', 'Group', 'ServicePrincipal'])
param principalType string = 'User'
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Enabled'
param allowedIpRanges array = []
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
param cosmosServerless bool = true
@minValue(1000)
param cosmosAutoscaleMaxThroughput int = 1000
param cosmosContinuousBackup bool = true
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param storageSkuName string = 'Standard_ZRS'
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30
param tradesQueue string = 'trades'
param marksQueue string = 'marks'
param marksFanoutQueue string = 'marks-fanout'
param marksFanoutBatch string = '200'
param marksIndexShards string = '4'
param riskBandWidth string = '0.05'
param azureSdkLogLevel string = 'WARNING'
param alertsQueue string = 'alerts'
param cosmosDatabase string = 'tradeguard'
param riskMarginCallRatio string = '0.80'
param riskLargeTradeNotional string = 'USDT:1000000,BTC:20'
param riskPositionLimitNotional string = 'USDT:10000000,BTC:200'
param staleMarkAfterSeconds string = '300'
param markCacheSeconds string = '0'
param ordersQueue string = 'orders'
param orderDecisionsQueue string = 'order-decisions'
param orderMarketSlippage string = '0.0005'
param orderRateLimitPerSecond string = '50'
param orderMaxMarginRatio string = ''
param instrumentsFile string = ''

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var functionAppName = 'func-tradeguard-${token}'
var deploymentContainerName = 'app-package-${take(token, 12)}'
var privateNetwork = publicNetworkAccess == 'Disabled'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-tradeguard-${token}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-tradeguard-${token}'
    applicationInsightsName: 'appi-tradeguard-${token}'
    retentionDays: logRetentionDays
    publisherPrincipalId: identity.properties.principalId
  }
}

module network 'modules/network.bicep' = if (privateNetwork) {
  name: 'network'
  params: {
    location: location
    tags: tags
    name: 'vnet-tradeguard-${token}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    name: 'sttg${token}'
    skuName: storageSkuName
    publicNetworkAccess: publicNetworkAccess
    allowedIpRanges: allowedIpRanges
    deploymentContainerName: deploymentContainerName
    queueNames: [
      tradesQueue
      '${tradesQueue}-poison'
      marksQueue
      '${marksQueue}-poison'
      marksFanoutQueue
      '${marksFanoutQueue}-poison'
      ordersQueue
      '${ordersQueue}-poison'
      orderDecisionsQueue
      alertsQueue
    ]
    appPrincipalId: identity.properties.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
    privateEndpointSubnetId: privateNetwork ? network.outputs.privateEndpointSubnetId : ''
    blobDnsZoneId: privateNetwork ? network.outputs.blobDnsZoneId : ''
    queueDnsZoneId: privateNetwork ? network.outputs.queueDnsZoneId : ''
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    tags: tags
    name: 'cosmos-tradeguard-${token}'
    databaseName: cosmosDatabase
    serverless: cosmosServerless
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    continuousBackup: cosmosContinuousBackup
    publicNetworkAccess: publicNetworkAccess
    allowedIpRanges: allowedIpRanges
    appPrincipalId: identity.properties.principalId
    operatorPrincipalId: principalId
    privateEndpointSubnetId: privateNetwork ? network.outputs.privateEndpointSubnetId : ''
    cosmosDnsZoneId: privateNetwork ? network.outputs.cosmosDnsZoneId : ''
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: tags
    name: functionAppName
    planName: 'plan-tradeguard-${token}'
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    publicNetworkAccess: publicNetworkAccess
    virtualNetworkSubnetId: privateNetwork ? network.outputs.appSubnetId : ''
    settings: {
      TRADES_QUEUE: tradesQueue
      MARKS_QUEUE: marksQueue
      MARKS_FANOUT_QUEUE: marksFanoutQueue
      MARKS_FANOUT_BATCH: marksFanoutBatch
      MARKS_INDEX_SHARDS: marksIndexShards
      RISK_BAND_WIDTH: riskBandWidth
      ORDERS_QUEUE: ordersQueue
      ORDER_DECISIONS_QUEUE: orderDecisionsQueue
      ORDER_MARKET_SLIPPAGE: orderMarketSlippage
      ORDER_RATE_LIMIT_PER_SECOND: orderRateLimitPerSecond
      ORDER_MAX_MARGIN_RATIO: orderMaxMarginRatio
      AZURE_SDK_LOG_LEVEL: azureSdkLogLevel
      ALERTS_QUEUE: alertsQueue
      COSMOS_ENDPOINT: cosmos.outputs.endpoint
      COSMOS_DATABASE: cosmosDatabase
      RISK_MARGIN_CALL_RATIO: riskMarginCallRatio
      RISK_LARGE_TRADE_NOTIONAL: riskLargeTradeNotional
      RISK_POSITION_LIMIT_NOTIONAL: riskPositionLimitNotional
      STALE_MARK_AFTER_SECONDS: staleMarkAfterSeconds
      MARK_CACHE_SECONDS: markCacheSeconds
    }
    instrumentsFile: instrumentsFile
  }
}

output functionAppName string = app.outputs.name
output storageAccountName string = storage.outputs.name
output queueServiceUri string = storage.outputs.queueServiceUri
output cosmosEndpoint string = cosmos.outputs.endpoint
output identityClientId string = identity.properties.clientId
output applicationInsightsName string = monitoring.outputs.applicationInsightsName
