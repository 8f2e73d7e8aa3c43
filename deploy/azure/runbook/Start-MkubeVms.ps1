<#
.SYNOPSIS
  Starts the deallocated (evicted) VMs of an mkube cluster.
.DESCRIPTION
  The safety net behind the masters' own peer revival: runs every 15 minutes
  (four hourly schedules, offset) under the Automation account's
  system-assigned identity, which holds "Virtual Machine Contributor" on the
  resource group. Spot capacity may be missing; a VM that fails to start is
  tried again at the next run.
#>
param(
    [Parameter(Mandatory = $true)][string] $ResourceGroupName,
    [Parameter(Mandatory = $true)][string] $ClusterName
)
$ErrorActionPreference = 'Stop'
Connect-AzAccount -Identity | Out-Null
$vms = Get-AzVM -ResourceGroupName $ResourceGroupName -Status |
    Where-Object { $_.Tags['mkube-cluster'] -eq $ClusterName }
foreach ($vm in $vms) {
    $power = ($vm.Statuses | Where-Object { $_.Code -like 'PowerState/*' }).Code
    if ($power -eq 'PowerState/deallocated' -or $power -eq 'PowerState/stopped') {
        Write-Output "starting $($vm.Name) ($power)"
        try {
            Start-AzVM -ResourceGroupName $ResourceGroupName -Name $vm.Name -NoWait | Out-Null
        } catch {
            Write-Warning "cannot start $($vm.Name) now: $($_.Exception.Message)"
        }
    } else {
        Write-Output "$($vm.Name): $power"
    }
}
