"""The synthetic estate's price list: Azure services with plausible meters, units, list prices and usage behaviour."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Meter:
    sub_category: str
    name: str
    unit: str  # FOCUS PricingUnit, as Azure writes UnitOfMeasure
    price: float  # the contract's unit price, USD: pay-as-you-go list x (1 - NEGOTIATED_DISCOUNT of its category)
    daily_cost: float  # median daily cost of one resource on this meter, USD (sets the quantity)
    steady: bool = False  # runs 24/7 at a fixed size (hours of a VM, a provisioned unit): no noise or weekly dip


@dataclass(frozen=True)
class Service:
    name: str  # FOCUS ServiceName
    category: str  # FOCUS ServiceCategory (one of the spec's allowed values)
    meter_category: str  # Azure MeterCategory
    resource_type: str  # FOCUS ResourceType (Azure's display name)
    arm_type: str  # x_ResourceType: the ARM provider type, lower case as Azure exports it
    name_prefix: str  # resource names look like "<prefix>-<app>-<nn>"
    meters: tuple[Meter, ...]
    weight: float  # relative number of resources of this service
    one_meter: bool = False  # a resource uses exactly one of the meters (a VM has one size), else a subset
    noise: float = 0.06  # sigma of day-to-day lognormal noise
    weekend: float = 0.85  # weekend usage as a fraction of weekdays (dev/test scale-down, batch pauses)
    reservable: bool = False  # reservations / savings plans / spot apply
    savings_plan: bool = False  # covered by the compute savings plan


# A table reads better than one argument per line.
# fmt: off
SERVICES: tuple[Service, ...] = (
    Service(
        "Virtual Machines", "Compute", "Virtual Machines", "Virtual machine",
        "microsoft.compute/virtualmachines", "vm",
        (
            Meter("Dsv5 Series", "D4s v5", "1 Hour", 0.192, 4.6, steady=True),
            Meter("Esv5 Series", "E8s v5", "1 Hour", 0.504, 12.1, steady=True),
            Meter("BS Series", "B2ms", "1 Hour", 0.0832, 2.0, steady=True),
            Meter("Fsv2 Series", "F8s v2", "1 Hour", 0.338, 8.1, steady=True),
        ),
        weight=14, one_meter=True, noise=0.03, weekend=0.9, reservable=True, savings_plan=True,
    ),
    Service(
        "Managed Disks", "Storage", "Storage", "Disk", "microsoft.compute/disks", "disk",
        (
            Meter("Premium SSD Managed Disks", "P10 LRS Disk", "1/Month", 19.71, 0.65, steady=True),
            Meter("Standard SSD Managed Disks", "E10 LRS Disk", "1/Month", 9.6, 0.32, steady=True),
        ),
        weight=12, one_meter=True, noise=0.0, weekend=1.0,
    ),
    Service(
        "Storage Accounts", "Storage", "Storage", "Storage account", "microsoft.storage/storageaccounts", "st",
        (
            Meter("Tiered Block Blob", "Hot LRS Data Stored", "1 GB/Month", 0.0184, 3.1),
            Meter("Tiered Block Blob", "Hot Read Operations", "10K", 0.0044, 0.4),
            Meter("Tiered Block Blob", "Hot Write Operations", "10K", 0.055, 0.9),
            Meter("Tiered Block Blob", "Cool LRS Data Stored", "1 GB/Month", 0.01, 0.8),
        ),
        weight=10, noise=0.05, weekend=0.95,
    ),
    Service(
        "Azure SQL Database", "Databases", "SQL Database", "SQL database", "microsoft.sql/servers/databases", "sqldb",
        (
            Meter("General Purpose - Compute Gen5", "vCore", "1 Hour", 0.2522, 24.2, steady=True),
            Meter("General Purpose - Storage", "Data Stored", "1 GB/Month", 0.115, 1.5),
        ),
        weight=5, noise=0.02, weekend=1.0,
    ),
    Service(
        "Azure Cosmos DB", "Databases", "Azure Cosmos DB", "Azure Cosmos DB account",
        "microsoft.documentdb/databaseaccounts", "cosmos",
        (
            Meter("Azure Cosmos DB", "100 RU/s", "1 Hour", 0.008, 7.7),
            Meter("Azure Cosmos DB", "Data Stored", "1 GB/Month", 0.25, 1.2),
        ),
        weight=3, noise=0.08, weekend=0.8,
    ),
    Service(
        "Azure Database for PostgreSQL", "Databases", "Azure Database for PostgreSQL", "Azure Database for PostgreSQL flexible server",
        "microsoft.dbforpostgresql/flexibleservers", "psql",
        (
            Meter("Flexible Server General Purpose Dsv5 Series Compute", "vCore", "1 Hour", 0.0999, 9.6, steady=True),
            Meter("Flexible Server Storage", "Storage Data Stored", "1 GB/Month", 0.115, 0.9),
        ),
        weight=3, noise=0.02, weekend=1.0,
    ),
    Service(
        "Azure Cache for Redis", "Databases", "Redis Cache", "Azure Cache for Redis", "microsoft.cache/redis", "redis",
        (Meter("Standard", "C1 Cache Instance", "1 Hour", 0.1, 2.4, steady=True),),
        weight=2, noise=0.0, weekend=1.0,
    ),
    Service(
        "Azure Kubernetes Service", "Compute", "Azure Kubernetes Service", "Kubernetes service",
        "microsoft.containerservice/managedclusters", "aks",
        (Meter("Standard", "Standard Uptime SLA", "1 Hour", 0.1, 2.4, steady=True),),
        weight=2, noise=0.0, weekend=1.0,
    ),
    Service(
        "Azure App Service", "Web", "Azure App Service", "App Service plan", "microsoft.web/serverfarms", "asp",
        (
            Meter("Premium v3 Plan", "P1 v3 App", "1 Hour", 0.2, 4.8, steady=True),
            Meter("Standard Plan", "S1 App", "1 Hour", 0.1, 2.4, steady=True),
        ),
        weight=5, one_meter=True, noise=0.04, weekend=0.9, savings_plan=True,
    ),
    Service(
        "Functions", "Compute", "Functions", "Function app", "microsoft.web/sites", "func",
        (
            Meter("Standard", "Standard Execution Time", "100000 GB Seconds", 1.6, 0.7),
            Meter("Standard", "Standard Total Executions", "1M", 0.2, 0.15),
        ),
        weight=4, noise=0.15, weekend=0.6,
    ),
    Service(
        "Bandwidth", "Networking", "Bandwidth", "Virtual network", "microsoft.network/virtualnetworks", "vnet",
        (
            Meter("Rtn Preference: MGN", "Standard Data Transfer Out", "1 GB", 0.087, 3.5),
            Meter("Inter-Region", "Intra Continent Data Transfer Out", "1 GB", 0.02, 0.9),
        ),
        weight=4, noise=0.12, weekend=0.7,
    ),
    Service(
        "Load Balancer", "Networking", "Load Balancer", "Load balancer", "microsoft.network/loadbalancers", "lb",
        (
            Meter("Standard", "Standard Included LB Rules and Outbound Rules", "1 Hour", 0.025, 0.6, steady=True),
            Meter("Standard", "Standard Data Processed", "1 GB", 0.005, 0.3),
        ),
        weight=3, noise=0.08, weekend=0.8,
    ),
    Service(
        "Virtual Network", "Networking", "Virtual Network", "Public IP address", "microsoft.network/publicipaddresses", "pip",
        (Meter("IP Addresses", "Standard IPv4 Static Public IP", "1 Hour", 0.005, 0.12, steady=True),),
        weight=5, noise=0.0, weekend=1.0,
    ),
    Service(
        "Application Gateway", "Networking", "Application Gateway", "Application gateway",
        "microsoft.network/applicationgateways", "agw",
        (
            Meter("Standard_v2", "Standard_v2 Fixed Cost", "1 Hour", 0.246, 5.9, steady=True),
            Meter("Standard_v2", "Standard_v2 Capacity Units", "1 Hour", 0.008, 1.6),
        ),
        weight=1.5, noise=0.07, weekend=0.8,
    ),
    Service(
        "Azure Firewall", "Security", "Azure Firewall", "Firewall", "microsoft.network/azurefirewalls", "afw",
        (
            Meter("Standard", "Standard Deployment", "1 Hour", 1.25, 30.0, steady=True),
            Meter("Standard", "Standard Data Processed", "1 GB", 0.016, 1.1),
        ),
        weight=0.6, noise=0.05, weekend=0.85,
    ),
    Service(
        "Azure DNS", "Networking", "Azure DNS", "DNS zone", "microsoft.network/dnszones", "dns",
        (
            Meter("Public", "Public Zone", "1/Month", 0.5, 0.017, steady=True),
            Meter("Public", "Public Queries", "1M", 0.4, 0.05),
        ),
        weight=2, noise=0.1, weekend=0.9,
    ),
    Service(
        "Log Analytics", "Management and Governance", "Log Analytics", "Log Analytics workspace",
        "microsoft.operationalinsights/workspaces", "log",
        (Meter("Analytics Logs", "Analytics Logs Data Ingestion", "1 GB", 2.3, 9.0),),
        weight=2.5, noise=0.1, weekend=0.75,
    ),
    Service(
        "Key Vault", "Security", "Key Vault", "Key vault", "microsoft.keyvault/vaults", "kv",
        (Meter("Standard", "Operations", "10K", 0.03, 0.08),),
        weight=3, noise=0.15, weekend=0.7,
    ),
    Service(
        "Microsoft Defender for Cloud", "Security", "Microsoft Defender for Cloud", "Virtual machine",
        "microsoft.security/pricings", "mdc",
        (Meter("Standard", "Standard Node", "1 Hour", 0.0202, 0.48, steady=True),),
        weight=2, noise=0.0, weekend=1.0,
    ),
    Service(
        "Azure Data Factory v2", "Analytics", "Azure Data Factory v2", "Data factory (V2)",
        "microsoft.datafactory/factories", "adf",
        (
            Meter("Cloud Orchestration", "Cloud Orchestration Activity Run", "1K", 1.0, 1.4),
            Meter("Cloud Data Movement", "Cloud Data Movement", "1 Hour", 0.25, 3.0),
        ),
        weight=1.5, noise=0.12, weekend=0.5,
    ),
    Service(
        "Azure Databricks", "Analytics", "Azure Databricks", "Azure Databricks Service",
        "microsoft.databricks/workspaces", "dbw",
        (Meter("Premium", "Premium All-purpose Compute DBU", "1 Hour", 0.55, 26.0),),
        weight=1.2, noise=0.15, weekend=0.45,
    ),
    Service(
        "Event Hubs", "Integration", "Event Hubs", "Event Hubs Namespace", "microsoft.eventhub/namespaces", "evh",
        (
            Meter("Standard", "Standard Throughput Unit", "1 Hour", 0.03, 1.44, steady=True),
            Meter("Standard", "Standard Ingress Events", "1M", 0.028, 0.3),
        ),
        weight=1.5, noise=0.08, weekend=0.8,
    ),
    Service(
        "Service Bus", "Integration", "Service Bus", "Service Bus Namespace", "microsoft.servicebus/namespaces", "sb",
        (
            Meter("Standard", "Standard Base Unit", "1/Month", 10.0, 0.33, steady=True),
            Meter("Standard", "Standard Messaging Operations", "1M", 0.8, 0.4),
        ),
        weight=1.5, noise=0.1, weekend=0.75,
    ),
    Service(
        "Container Registry", "Containers", "Container Registry", "Container registry",
        "microsoft.containerregistry/registries", "acr",
        (Meter("Premium", "Premium Registry Unit", "1/Day", 1.667, 1.667, steady=True),),
        weight=1, noise=0.0, weekend=1.0,
    ),
    Service(
        "Azure OpenAI", "AI and Machine Learning", "Cognitive Services", "Azure OpenAI",
        "microsoft.cognitiveservices/accounts", "oai",
        (
            Meter("Azure OpenAI", "gpt-4o-mini-0718-Inp-glbl Tokens", "1K", 0.000165, 1.8),
            Meter("Azure OpenAI", "gpt-4o-mini-0718-Outp-glbl Tokens", "1K", 0.00066, 2.4),
        ),
        weight=1, noise=0.2, weekend=0.55,
    ),
    Service(
        "Backup", "Storage", "Backup", "Recovery Services vault", "microsoft.recoveryservices/vaults", "rsv",
        (
            Meter("Azure VM Protected Instances", "Azure VM Protected Instances", "1/Month", 10.0, 0.33, steady=True),
            Meter("Backup Storage", "LRS Data Stored", "1 GB/Month", 0.0224, 0.7),
        ),
        weight=1.5, noise=0.03, weekend=1.0,
    ),
)
# fmt: on

REGIONS: tuple[tuple[str, str], ...] = (
    ("eastus", "East US"),
    ("westeurope", "West Europe"),
    ("northeurope", "North Europe"),
    ("eastus2", "East US 2"),
    ("southeastasia", "Southeast Asia"),
)
REGION_WEIGHTS = (0.4, 0.3, 0.12, 0.12, 0.06)

# (name, environment, relative size): the subscriptions of a mid-sized company.
SUBSCRIPTIONS: tuple[tuple[str, str, float], ...] = (
    ("contoso-prod", "prod", 0.34),
    ("contoso-dev", "dev", 0.18),
    ("contoso-data", "prod", 0.2),
    ("contoso-shared", "prod", 0.12),
    ("contoso-sandbox", "sandbox", 0.08),
    ("contoso-test", "test", 0.08),
    ("contoso-ml", "prod", 0.06),
    ("contoso-legacy", "prod", 0.04),
)

# Workloads give resource groups, apps and teams their names.
WORKLOADS: tuple[tuple[str, str, str], ...] = (
    ("web", "storefront", "frontend"),
    ("api", "orders", "payments"),
    ("data", "lakehouse", "data-platform"),
    ("net", "hub", "platform"),
    ("ml", "recommender", "data-science"),
    ("ops", "monitoring", "sre"),
    ("crm", "crm", "sales-eng"),
    ("batch", "billing", "payments"),
    ("identity", "sso", "security"),
    ("search", "catalog", "frontend"),
)

COST_CENTERS = ("CC-1001", "CC-1002", "CC-2040", "CC-3100", "CC-4500")
OWNERS = ("alice@contoso.com", "bob@contoso.com", "carol@contoso.com", "dan@contoso.com", "erin@contoso.com")

# The estate's negotiated (EA / MCA) discount off the pay-as-you-go list price per FOCUS ServiceCategory:
# ContractedCost = ListCost x (1 - discount). Catalog prices are the contract's, so BilledCost and
# EffectiveCost do not depend on these; only ListCost (and ListUnitPrice) are above them.
NEGOTIATED_DISCOUNT: dict[str, float] = {
    "Compute": 0.15,
    "Databases": 0.12,
    "Storage": 0.08,
    "Analytics": 0.10,
    "Networking": 0.05,
}

# Idle resources every estate carries, so the Waste & savings page has something to find: a VM left
# deallocated (its OS disk still billed on the VM), a premium data disk nothing attaches, a public IP
# nothing uses, and a backup fee billed with zero quantity; all in one resource group without compute.
# (name, service, ARM type, meter category, sub-category, meter, unit, contract unit price USD, billed
# quantity: "day" = one day of a monthly unit, "hours" = 24, "none" = 0: a fee with no usage behind it)
IDLE_RESOURCES: tuple[tuple[str, str, str, str, str, str, str, float, str], ...] = (
    ("vm-legacy-01", "Virtual Machines", "microsoft.compute/virtualmachines", "Storage",
     "Premium SSD Managed Disks", "P10 LRS Disk", "1/Month", 19.71, "day"),
    ("disk-legacy-01-data", "Managed Disks", "microsoft.compute/disks", "Storage",
     "Premium SSD Managed Disks", "P30 LRS Disk", "1/Month", 135.17, "day"),
    ("pip-legacy-01", "Virtual Network", "microsoft.network/publicipaddresses", "Virtual Network",
     "IP Addresses", "Standard IPv4 Static Public IP", "1 Hour", 0.005, "hours"),
    ("rsv-legacy-01", "Backup", "microsoft.recoveryservices/vaults", "Backup",
     "Azure VM Protected Instances", "Azure VM Protected Instances", "1/Month", 10.0, "none"),
)  # fmt: skip
IDLE_RESOURCE_GROUP = "rg-legacy"  # + "-<subscription suffix>", in the first dev/test/sandbox subscription
