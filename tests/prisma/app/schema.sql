-- The tables of schema.prisma as `prisma migrate diff --from-empty --to-schema schema.prisma
-- --script` writes them for SQL Server, except that migrate adds the foreign keys afterwards
-- with `ALTER TABLE ... ADD CONSTRAINT`, which tdslite does not run: here the same named
-- constraints are part of CREATE TABLE. Batches are separated by GO lines.
CREATE TABLE [dbo].[User] (
    [id] INT NOT NULL IDENTITY(1,1),
    [email] NVARCHAR(1000) NOT NULL,
    [name] NVARCHAR(1000),
    [balance] DECIMAL(18,4) NOT NULL CONSTRAINT [User_balance_df] DEFAULT 0,
    [visits] BIGINT NOT NULL CONSTRAINT [User_visits_df] DEFAULT 0,
    [active] BIT NOT NULL CONSTRAINT [User_active_df] DEFAULT 1,
    [score] FLOAT(53),
    [birthday] DATE,
    [createdAt] DATETIME2 NOT NULL CONSTRAINT [User_createdAt_df] DEFAULT CURRENT_TIMESTAMP,
    [avatar] VARBINARY(max),
    CONSTRAINT [User_pkey] PRIMARY KEY CLUSTERED ([id]),
    CONSTRAINT [User_email_key] UNIQUE NONCLUSTERED ([email])
);
GO
CREATE TABLE [dbo].[Post] (
    [id] INT NOT NULL IDENTITY(1,1),
    [title] NVARCHAR(1000) NOT NULL,
    [published] BIT NOT NULL CONSTRAINT [Post_published_df] DEFAULT 0,
    [authorId] INT NOT NULL,
    CONSTRAINT [Post_pkey] PRIMARY KEY CLUSTERED ([id]),
    CONSTRAINT [Post_authorId_fkey] FOREIGN KEY ([authorId]) REFERENCES [dbo].[User]([id]) ON DELETE NO ACTION ON UPDATE CASCADE
);
GO
CREATE TABLE [dbo].[Profile] (
    [id] INT NOT NULL IDENTITY(1,1),
    [bio] NVARCHAR(1000) NOT NULL,
    [userId] INT NOT NULL,
    CONSTRAINT [Profile_pkey] PRIMARY KEY CLUSTERED ([id]),
    CONSTRAINT [Profile_userId_key] UNIQUE NONCLUSTERED ([userId]),
    CONSTRAINT [Profile_userId_fkey] FOREIGN KEY ([userId]) REFERENCES [dbo].[User]([id]) ON DELETE NO ACTION ON UPDATE CASCADE
);
