// tradeguard on Azure: the entry point for `azd up` and for `az deployment sub create`.
//
// Creates (or reuses) the resource group and deploys resources.bicep into it. Everything
// below is also deployable into an existing resource group with
// `az deployment group create --template-file infra/resources.bicep` (docs/operations.md).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Environment name (azd: AZURE_ENV_NAME); part of every generated resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource; it must offer the Flex Consumption plan.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Resource group to create or reuse; default rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of an operator (user or group) that gets data access to the queues and Cosmos DB for replay and inspection; empty = none.')
param principalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
@description('What principalId is.')
param principalType string = 'User'

@allowed(['Enabled', 'Disabled'])
@description('Public network access of storage and Cosmos DB. Disabled: a virtual network with private endpoints is deployed and the function app is integrated into it.')
param publicNetworkAccess string = 'Enabled'

@description('IP ranges (CIDR) allowed through the storage and Cosmos DB firewalls while public access is Enabled (e.g. an operator workstation); Azure services are always let through.')
param allowedIpRanges array = []

@description('Flex Consumption: the most instances the app may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@allowed([512, 2048, 4096])
@description('Flex Consumption: memory of one instance.')
param instanceMemoryMB int = 2048

@description('Cosmos DB serverless (pay per request) instead of provisioned autoscale throughput.')
param cosmosServerless bool = true

@minValue(1000)
@description('Provisioned mode only: the autoscale maximum RU/s shared by the database.')
param cosmosAutoscaleMaxThroughput int = 1000

@description('Cosmos DB continuous backup (point-in-time restore, 7 days) instead of periodic.')
param cosmosContinuousBackup bool = true

@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
@description('Replication of the storage account that holds the queues.')
param storageSkuName string = 'Standard_ZRS'

@minValue(30)
@maxValue(730)
@description('Log Analytics retention in days.')
param logRetentionDays int = 30

// App settings the code reads (handlers/settings.py); defaults match the code's.
param tradesQueue string = 'trades'
param marksQueue string = 'marks'
@description('The app\'s own queue that carries the units of a mark\'s pass over many holders (with its -poison).')
param marksFanoutQueue string = 'marks-fanout'
@description('Accounts one invocation re-values for a mark; the rest go to marksFanoutQueue in units of this many.')
param marksFanoutBatch string = '200'
@description('Logical partitions the holder index of one symbol spans (1-64): set it to about one per 1,000 holders of the busiest symbol.')
param marksIndexShards string = '4'
@description('The widest risk band, a fraction of the mark each way (0 < w <= 0.5): wider means fewer re-bandings, narrower tighter bands.')
param riskBandWidth string = '0.05'
@description('Level of the Azure SDK loggers (their HTTP logs are INFO): WARNING keeps them out of Application Insights.')
@allowed(['DEBUG', 'INFO', 'WARNING', 'ERROR'])
param azureSdkLogLevel string = 'WARNING'
param alertsQueue string = 'alerts'
param cosmosDatabase string = 'tradeguard'
param riskMarginCallRatio string = '0.80'
param riskLargeTradeNotional string = 'USDT:1000000,BTC:20'
param riskPositionLimitNotional string = 'USDT:10000000,BTC:200'
param staleMarkAfterSeconds string = '300'
@description('How old (seconds) an instance\'s copy of a stored mark may be for a fill\'s first look at a symbol the account does not hold; 0 (default) = always read.')
param markCacheSeconds string = '0'
@description('The pre-trade checks: ORDER, ORDER_DONE and ACCOUNT_CONTROL in (with its -poison).')
param ordersQueue string = 'orders'
@description('Where ORDER_DECISION messages go.')
param orderDecisionsQueue string = 'order-decisions'
@description('How far beyond the mark a MARKET order is valued, a fraction (0 <= s < 0.5).')
param orderMarketSlippage string = '0.0005'
@description('Orders per account per second of submittedAt (0 turns the limit off).')
param orderRateLimitPerSecond string = '50'
@description('The margin ratio an order may not bring its wallet to, in (0, 1]; empty: riskMarginCallRatio.')
param orderMaxMarginRatio string = ''
@description('Path (inside the deployed package) of an instrument catalog that replaces the shipped one; empty = the shipped catalog.')
param instrumentsFile string = ''

var tags = { 'azd-env-name': environmentName, application: 'tradeguard' }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'tradeguard-resources'
  scope: rg
  params: {
    environmentName: environmentName
    location: location
    tags: tags
    principalId: principalId
    principalType: principalType
    publicNetworkAccess: publicNetworkAccess
    allowedIpRanges: allowedIpRanges
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    cosmosServerless: cosmosServerless
    cosmosAutoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    cosmosContinuousBackup: cosmosContinuousBackup
    storageSkuName: storageSkuName
    logRetentionDays: logRetentionDays
    tradesQueue: tradesQueue
    marksQueue: marksQueue
    marksFanoutQueue: marksFanoutQueue
    marksFanoutBatch: marksFanoutBatch
    marksIndexShards: marksIndexShards
    riskBandWidth: riskBandWidth
    azureSdkLogLevel: azureSdkLogLevel
    alertsQueue: alertsQueue
    cosmosDatabase: cosmosDatabase
    riskMarginCallRatio: riskMarginCallRatio
    riskLargeTradeNotional: riskLargeTradeNotional
    riskPositionLimitNotional: riskPositionLimitNotional
    staleMarkAfterSeconds: staleMarkAfterSeconds
    markCacheSeconds: markCacheSeconds
    ordersQueue: ordersQueue
    orderDecisionsQueue: orderDecisionsQueue
    orderMarketSlippage: orderMarketSlippage
    orderRateLimitPerSecond: orderRateLimitPerSecond
    orderMaxMarginRatio: orderMaxMarginRatio
    instrumentsFile: instrumentsFile
  }
}

// azd reads these into the environment (.azure/<env>/.env).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output SERVICE_FUNCTIONS_NAME string = resources.outputs.functionAppName
output AZURE_STORAGE_ACCOUNT_NAME string = resources.outputs.storageAccountName
output AZURE_STORAGE_QUEUE_ENDPOINT string = resources.outputs.queueServiceUri
output COSMOS_ENDPOINT string = resources.outputs.cosmosEndpoint
output COSMOS_DATABASE string = cosmosDatabase
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = resources.outputs.identityClientId
output APPLICATIONINSIGHTS_NAME string = resources.outputs.applicationInsightsName
