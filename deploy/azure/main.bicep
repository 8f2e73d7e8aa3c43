// mkube on Azure Spot VMs: network, VMs, Key Vault, Cosmos DB (free tier)
// and the Automation safety net that starts evicted VMs.
//
// azuredeploy.json is the same template as ARM JSON (kept in step by
// tests/tests/azure_templates.rs); deploy.sh deploys either.
//
// Cost model: masterCount + workerCount Spot VMs (E2as v5 by default, Spot
// price, never evicted for price: maxPrice -1, capacity evictions still
// happen), their OS disks (billed while deallocated), public IPv6 addresses
// (no public IPv4), Key Vault operations, a Cosmos DB free-tier account
// (1000 RU/s and 25 GB free; one per subscription) and Automation job
// minutes (500 free a month; the runbook runs ~2,900 times a month for
// well under a minute each).

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Cluster name: prefixes resource names and tags the VMs (mkube-cluster).')
@minLength(3)
@maxLength(12)
param clusterName string = 'mkube'

@description('VMs that run a master and a worker (an odd number).')
@allowed([1, 3, 5])
param masterCount int = 3

@description('VMs that run only a worker.')
@minValue(0)
@maxValue(50)
param workerCount int = 0

@description('VM size.')
param vmSize string = 'Standard_E2as_v5'

@description('Keep the VMs in a proximity placement group (lower Raft latency, harder Spot allocation).')
param useProximityPlacementGroup bool = false

@description('Admin user of the VMs.')
param adminUsername string = 'mkube'

@description('SSH public key of the admin user.')
param sshPublicKey string

@description('IPv6 prefix allowed to reach SSH and the mkube API (the operator).')
param operatorIpv6Prefix string

@description('URL of a tar.gz holding mkube-master, mkube-worker and mkctl (deploy.sh uploads one).')
param binariesUrl string

@description('URL of runbook/start_mkube_vms.py (deploy.sh uploads it).')
param runbookUrl string

@description('The cluster CA certificate, PEM (mkube-pki init; deploy.sh makes one).')
param caCert string

@description('The cluster CA key, PEM: only masters read it (they issue their own certificates and sign workers\' requests with it).')
@secure()
param caKey string

@description('Tokens of cluster members (masters, probes), one per line, the first one sent.')
@secure()
param memberToken string

@description('Tokens workers present to register, one per line.')
@secure()
param joinToken string

@description('Tokens of mkctl users (the Master API, the store read-only), one per line.')
@secure()
param userToken string

@description('Tokens of operators (everything, raw store writes included), one per line.')
@secure()
param adminToken string

@description('Tokens of readers (get, list, watch, metrics: Grafana, Prometheus), one per line.')
@secure()
param viewerToken string

@description('Create the Cosmos DB account on the free tier (one per subscription).')
param cosmosFreeTier bool = true

@description('First run of the revival schedules (UTC); four hourly schedules start 15 minutes apart from here.')
param scheduleStart string = dateTimeAdd(utcNow(), 'PT1H')

@description('Create the revival job schedules: true on the first deployment only. Automation refuses to create a job schedule for a runbook and schedule that already have one (409 Conflict), whatever its name, so a second run must leave them be (deploy.sh decides).')
param createJobSchedules bool = true

var vmCount = masterCount + workerCount
var vnetName = '${clusterName}-vnet'
var subnetName = 'mkube'
var subnetId = resourceId('Microsoft.Network/virtualNetworks/subnets', vnetName, subnetName)
// Key Vault names are 3-24 characters: 'kv-' and a 13-character hash, whatever
// the cluster's name (12 characters of it and a hash did not fit).
var vaultName = 'kv-${uniqueString(resourceGroup().id, clusterName)}'
var cosmosName = '${clusterName}-${uniqueString(resourceGroup().id)}'
var automationName = '${clusterName}-revival'
var keyVaultSecretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
var masterPeers = join(map(range(0, masterCount), i => '${clusterName}-${i}=10.42.0.${10 + i}:7000'), ',')
var masterAddrs = join(map(range(0, masterCount), i => '10.42.0.${10 + i}:7000'), ',')
var cloudInit = loadTextContent('cloud-init.yaml')

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-07-01' = {
  name: '${clusterName}-nsg'
  location: location
  properties: {
    securityRules: [
      {
        name: 'mkube-inside'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRanges: ['7000', '10250', '3100']
        }
      }
      {
        name: 'operator-ssh-and-api'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: operatorIpv6Prefix
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRanges: ['22', '7000', '3100', '3000']
        }
      }
      {
        name: 'pod-host-ports'
        properties: {
          priority: 120
          direction: 'Inbound'
          access: 'Allow'
          protocol: '*'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '8000-8999'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-07-01' = {
  name: vnetName
  location: location
  properties: {
    addressSpace: {
      addressPrefixes: ['10.42.0.0/16', 'ace:cab:deca::/48']
    }
    subnets: [
      {
        name: subnetName
        properties: {
          addressPrefixes: ['10.42.0.0/24', 'ace:cab:deca:deed::/64']
          networkSecurityGroup: { id: nsg.id }
          defaultOutboundAccess: false
          serviceEndpoints: [
            { service: 'Microsoft.KeyVault' }
            { service: 'Microsoft.AzureCosmosDB' }
            { service: 'Microsoft.Storage' }
          ]
        }
      }
    ]
  }
}

resource ppg 'Microsoft.Compute/proximityPlacementGroups@2024-07-01' = if (useProximityPlacementGroup) {
  name: '${clusterName}-ppg'
  location: location
  properties: {
    proximityPlacementGroupType: 'Standard'
  }
}

resource publicIps 'Microsoft.Network/publicIPAddresses@2024-07-01' = [for i in range(0, vmCount): {
  name: '${clusterName}-${i}-ipv6'
  location: location
  sku: { name: 'Standard' }
  properties: {
    publicIPAddressVersion: 'IPv6'
    publicIPAllocationMethod: 'Static'
  }
}]

// IPv4 egress: ARM (peer revival) answers over IPv4 only, and so do many
// image registries, while the subnet has no default outbound access. A
// Standard public IPv4 per VM (~$3.65 a month each) is the cheapest path up
// to about nine VMs; past that a NAT gateway (~$33 a month plus $0.045/GB)
// costs less (deploy/README.md). The NSG admits nothing new over IPv4 but
// the pods' host ports.
resource publicIpv4s 'Microsoft.Network/publicIPAddresses@2024-07-01' = [for i in range(0, vmCount): {
  name: '${clusterName}-${i}-ipv4'
  location: location
  sku: { name: 'Standard' }
  properties: {
    publicIPAddressVersion: 'IPv4'
    publicIPAllocationMethod: 'Static'
  }
}]

resource nics 'Microsoft.Network/networkInterfaces@2024-07-01' = [for i in range(0, vmCount): {
  name: '${clusterName}-${i}-nic'
  location: location
  properties: {
    ipConfigurations: [
      {
        name: 'ipv4'
        properties: {
          primary: true
          privateIPAddressVersion: 'IPv4'
          privateIPAllocationMethod: 'Static'
          privateIPAddress: '10.42.0.${10 + i}'
          subnet: { id: subnetId }
          publicIPAddress: { id: publicIpv4s[i].id }
        }
      }
      {
        name: 'ipv6'
        properties: {
          privateIPAddressVersion: 'IPv6'
          privateIPAllocationMethod: 'Dynamic'
          subnet: { id: subnetId }
          publicIPAddress: { id: publicIps[i].id }
        }
      }
    ]
  }
  dependsOn: [vnet]
}]

resource vms 'Microsoft.Compute/virtualMachines@2024-07-01' = [for i in range(0, vmCount): {
  name: '${clusterName}-${i}'
  location: location
  tags: {
    'mkube-cluster': clusterName
    'mkube-role': i < masterCount ? 'master' : 'worker'
  }
  identity: { type: 'SystemAssigned' }
  properties: {
    priority: 'Spot'
    evictionPolicy: 'Deallocate'
    billingProfile: { maxPrice: -1 }
    hardwareProfile: { vmSize: vmSize }
    proximityPlacementGroup: useProximityPlacementGroup ? { id: ppg.id } : null
    osProfile: {
      computerName: '${clusterName}-${i}'
      adminUsername: adminUsername
      customData: base64(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(cloudInit,
        '__ROLE__', i < masterCount ? 'master' : 'worker'),
        '__NAME__', '${clusterName}-${i}'),
        '__IP__', '10.42.0.${10 + i}'),
        '__MASTERS__', masterPeers),
        '__MASTER_ADDRS__', masterAddrs),
        '__BINARIES_URL__', binariesUrl),
        '__VAULT__', vaultName),
        '__COSMOS__', cosmos.properties.documentEndpoint),
        '__REGION__', location),
        '__SUBSCRIPTION__', subscription().subscriptionId),
        '__RESOURCE_GROUP__', resourceGroup().name),
        '__WORKER_EXTRA__', i < masterCount ? '--local-master 10.42.0.${10 + i}:7000' : ''))
      linuxConfiguration: {
        disablePasswordAuthentication: true
        ssh: {
          publicKeys: [
            {
              path: '/home/${adminUsername}/.ssh/authorized_keys'
              keyData: sshPublicKey
            }
          ]
        }
      }
    }
    storageProfile: {
      imageReference: {
        publisher: 'Debian'
        offer: 'debian-12'
        sku: '12-gen2'
        version: 'latest'
      }
      osDisk: {
        createOption: 'FromImage'
        deleteOption: 'Delete'
        managedDisk: { storageAccountType: 'StandardSSD_LRS' }
      }
    }
    networkProfile: {
      networkInterfaces: [
        {
          id: nics[i].id
          properties: { deleteOption: 'Delete' }
        }
      ]
    }
  }
}]

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: vaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      virtualNetworkRules: [
        { id: subnetId }
      ]
    }
  }
  dependsOn: [vnet]
}

resource caCertSecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'mkube-ca-crt'
  properties: {
    value: caCert
  }
}

resource caKeySecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'mkube-ca-key'
  properties: {
    value: caKey
  }
}

resource memberTokenSecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'mkube-member-token'
  properties: {
    value: memberToken
  }
}

resource joinTokenSecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'mkube-join-token'
  properties: {
    value: joinToken
  }
}

resource userTokenSecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'mkube-user-token'
  properties: {
    value: userToken
  }
}

resource adminTokenSecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'mkube-admin-token'
  properties: {
    value: adminToken
  }
}

resource viewerTokenSecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'mkube-viewer-token'
  properties: {
    value: viewerToken
  }
}

resource cosmosKeySecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'cosmos-key'
  properties: {
    value: cosmos.listKeys().primaryMasterKey
  }
}

// Key Vault access per secret: every VM (each runs a worker) reads the CA
// certificate and the join token; only the masters (the first masterCount
// VMs) read the CA key, the other tokens and the Cosmos DB key. A worker
// has its certificate signed by a master (kubelet TLS bootstrapping).
resource caCertReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, vmCount): {
  name: guid(caCertSecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: caCertSecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource joinTokenReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, vmCount): {
  name: guid(joinTokenSecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: joinTokenSecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource caKeyReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, masterCount): {
  name: guid(caKeySecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: caKeySecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource memberTokenReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, masterCount): {
  name: guid(memberTokenSecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: memberTokenSecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource adminTokenReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, masterCount): {
  name: guid(adminTokenSecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: adminTokenSecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource userTokenReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, masterCount): {
  name: guid(userTokenSecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: userTokenSecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource viewerTokenReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, masterCount): {
  name: guid(viewerTokenSecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: viewerTokenSecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource cosmosKeyReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, masterCount): {
  name: guid(cosmosKeySecret.id, '${clusterName}-${i}', keyVaultSecretsUser)
  scope: cosmosKeySecret
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// What revival needs and no more: read VMs and their instance view, start
// them (not run-command, not write): the masters' peer revival and the
// Automation runbook hold this role on the resource group.
resource revivalRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'mkube-revival')
  properties: {
    roleName: 'mkube revival ${resourceGroup().name} ${uniqueString(resourceGroup().id)}'
    description: 'Read VMs and their instance view, and start deallocated ones (mkube peer revival).'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Compute/virtualMachines/read'
          'Microsoft.Compute/virtualMachines/instanceView/read'
          'Microsoft.Compute/virtualMachines/start/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// The masters start the deallocated VMs of silent nodes (peer revival).
resource vmStarters 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, masterCount): {
  name: guid(resourceGroup().id, '${clusterName}-${i}', revivalRole.id)
  properties: {
    roleDefinitionId: revivalRole.id
    principalId: vms[i].identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: cosmosName
  location: location
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    enableFreeTier: cosmosFreeTier
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [
      { locationName: location, failoverPriority: 0, isZoneRedundant: false }
    ]
    capacity: { totalThroughputLimit: 1000 }
    isVirtualNetworkFilterEnabled: true
    virtualNetworkRules: [
      { id: subnetId }
    ]
  }
  dependsOn: [vnet]
}

resource cosmosDb 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: cosmos
  name: 'mkube'
  properties: {
    resource: { id: 'mkube' }
    options: { throughput: 1000 }
  }
}

resource metricsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: cosmosDb
  name: 'metrics'
  properties: {
    resource: {
      id: 'metrics'
      partitionKey: { paths: ['/pk'], kind: 'Hash', version: 2 }
      defaultTtl: -1
    }
  }
}

resource exportsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: cosmosDb
  name: 'exports'
  properties: {
    resource: {
      id: 'exports'
      partitionKey: { paths: ['/pk'], kind: 'Hash', version: 2 }
    }
  }
}

resource automation 'Microsoft.Automation/automationAccounts@2023-11-01' = {
  name: automationName
  location: location
  identity: { type: 'SystemAssigned' }
  properties: {
    sku: { name: 'Basic' }
  }
}

resource runbook 'Microsoft.Automation/automationAccounts/runbooks@2023-11-01' = {
  parent: automation
  name: 'Start-MkubeVms'
  location: location
  properties: {
    runbookType: 'Python3'
    description: 'Starts the deallocated VMs of the mkube cluster.'
    publishContentLink: { uri: runbookUrl }
  }
}

resource schedules 'Microsoft.Automation/automationAccounts/schedules@2023-11-01' = [for i in range(0, 4): {
  parent: automation
  name: 'revive-${i}'
  properties: {
    description: 'Hourly, offset ${15 * i} minutes: with its three siblings, every 15 minutes.'
    frequency: 'Hour'
    interval: 1
    startTime: dateTimeAdd(scheduleStart, 'PT${15 * i}M')
    timeZone: 'UTC'
  }
}]

resource jobSchedules 'Microsoft.Automation/automationAccounts/jobSchedules@2023-11-01' = [for i in range(0, 4): if (createJobSchedules) {
  parent: automation
  name: guid(automation.id, 'revive-${i}')
  properties: {
    runbook: { name: runbook.name }
    schedule: { name: schedules[i].name }
    // A Python runbook takes its parameters as its command line, in order.
    parameters: {
      SubscriptionId: subscription().subscriptionId
      ResourceGroupName: resourceGroup().name
      ClusterName: clusterName
    }
  }
}]

resource automationStartsVms 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, automation.id, revivalRole.id)
  properties: {
    roleDefinitionId: revivalRole.id
    principalId: automation.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output vaultName string = vaultName
output cosmosEndpoint string = cosmos.properties.documentEndpoint
output masterIpv6 array = [for i in range(0, masterCount): publicIps[i].properties.ipAddress]
