<#
.SYNOPSIS
  Starts the deallocated (evicted) VMs of an mkube cluster.
.DESCRIPTION
  The safety net behind the masters' own peer revival: runs every 15 minutes
  (four hourly schedules, offset) under the Automation account's
  system-assigned identity, which holds the custom role "mkube revival" on
  the resource group (read VMs and their instance view, start them). Spot capacity may be missing; a VM that fails to start is
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
    # The list form of Get-AzVM -Status carries the power state as
    # PowerState ("VM deallocated"), not the Statuses of the single-VM form.
    $power = $vm.PowerState
    if ($power -eq 'VM deallocated' -or $power -eq 'VM stopped') {
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
